"""The identity marker of an object-store tier: a small object beside its blobs, as a volume directory has.

Layout under the tier's prefix, as on a local volume::

    <prefix>.pacsvault-volume          {"volume_id": ..., "format": 1}, written at first use
    <prefix>blobs/<function>/ab/<hex digest>
    <prefix>quarantine/...             objects found bad, with their reason

The index remembers which identity belongs at which endpoint, bucket and
prefix, so a wrong bucket (another appliance's, an emptied one) is refused
instead of written into. The marker holds a random id and nothing else.
"""

from __future__ import annotations

import json
import uuid

from botocore.exceptions import ClientError

from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.storage import s3_objects
from pacsvault.daemon.storage.s3_client import S3Calls, error_code, translate

MARKER_NAME = ".pacsvault-volume"


def read_marker(calls: S3Calls, key: str) -> str | None:
    """The volume id in the marker object, or None when there is none."""
    def attempt() -> bytes | None:
        try:
            return bytes(calls.client.get_object(Bucket=calls.settings.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
    try:
        body = calls.call(f"a read of the marker {key}", attempt)
    except ClientError as exc:
        raise translate(exc, calls.settings, f"a read of the marker {key}") from exc
    if body is None:
        return None
    try:
        return str(json.loads(body)["volume_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Unavailable(f"object store {calls.settings.label}: unreadable marker {key}") from exc


def write_marker(calls: S3Calls, key: str) -> str:
    """Gives the prefix a new identity unless it has one already; returns the identity it has."""
    existing = read_marker(calls, key)
    if existing is not None:
        return existing
    volume_id = uuid.uuid4().hex
    body = (json.dumps({"volume_id": volume_id, "format": 1}) + "\n").encode()
    if s3_objects.upload(calls, key, body, if_absent=True) is None:
        found = read_marker(calls, key)  # another writer was first: its identity stands
        if found is not None:
            return found
    return volume_id


def holds_objects(calls: S3Calls, prefix: str) -> bool:
    """Whether any object's key starts with ``prefix`` (one listing request)."""
    def attempt() -> bool:
        answer = calls.client.list_objects_v2(Bucket=calls.settings.bucket, Prefix=prefix, MaxKeys=1)
        return bool(answer.get("KeyCount") or answer.get("Contents"))
    try:
        return calls.call(f"a listing of {prefix}", attempt)
    except ClientError as exc:
        raise translate(exc, calls.settings, f"a listing of {prefix}") from exc
