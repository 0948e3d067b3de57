"""Rewriting and removing objects on a store that may keep versions.

A rewrite of a large object sends only the part holding the changed bytes:
the rest is copied by the store itself (UploadPartCopy), pinned to the
ETag read before, so a copy never mixes two different objects. Where the
bucket keeps versions (always, with Object Lock), the old version is removed
only after the new one is verified, so at every moment one of them is whole.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from botocore.exceptions import ClientError

from pacsvault.daemon.errors import PacsvaultError, Unavailable
from pacsvault.daemon.storage import s3_objects
from pacsvault.daemon.storage.s3_client import S3Calls, translate
from pacsvault.daemon.storage.s3_lock import is_lock_refusal
from pacsvault.daemon.storage.s3_objects import Stored

log = logging.getLogger(__name__)


def version_field(version_id: str) -> dict[str, str]:
    """The VersionId argument of a call, none for the single version of an unversioned bucket."""
    return {} if version_id == "null" else {"VersionId": version_id}


def versions_oldest_first(calls: S3Calls, key: str) -> list[str]:
    """Every version id of ``key`` (delete markers too), the current one last."""
    def attempt() -> list[tuple[bool, Any, str]]:
        found = []
        pages = calls.client.get_paginator("list_object_versions").paginate(Bucket=calls.settings.bucket, Prefix=key)
        for page in pages:
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry["Key"] == key:
                    found.append((bool(entry.get("IsLatest")), entry["LastModified"], str(entry["VersionId"])))
        return found
    try:
        found = calls.call(f"a listing of the versions of {key}", attempt)
    except ClientError as exc:
        raise translate(exc, calls.settings, f"a listing of the versions of {key}") from exc
    return [version for _, _, version in sorted(found)]


def delete_version(calls: S3Calls, key: str, version_id: str, what: str) -> None:
    """Removes one version for good (a DELETE without a version id would only hide it)."""
    calls.call(what, lambda: calls.client.delete_object(Bucket=calls.settings.bucket, Key=key,
                                                        **version_field(version_id)))


def drop_older_versions(calls: S3Calls, key: str, keep: str) -> None:
    """Removes the versions of ``key`` other than ``keep``; those under Object Lock stay until it ends."""
    for version in versions_oldest_first(calls, key):
        if version == keep:
            continue
        try:
            delete_version(calls, key, version, f"the delete of an old version of {key}")
        except ClientError as exc:
            if not is_lock_refusal(exc):
                raise translate(exc, calls.settings, f"the delete of an old version of {key}") from exc
            log.info("object store %s keeps version %s of %s under Object Lock", calls.settings.label, version, key)


def rewrite_by_copy(calls: S3Calls, key: str, current: Stored, offset: int, data: bytes, copied_from: int,
                    lock: dict[str, Any]) -> str:
    """A new object: bytes [0, copied_from) sent with ``data`` patched in, the rest copied by the store."""
    bucket, part_size = calls.settings.bucket, calls.settings.part_size
    first = bytearray(s3_objects.read_range(calls, key, 0, copied_from))
    first[offset : offset + len(data)] = data
    upload_id = calls.call(f"the start of a rewrite of {key}", lambda: calls.client.create_multipart_upload(
        Bucket=bucket, Key=key, **lock))["UploadId"]
    try:
        parts = [_send_part(calls, key, upload_id, bytes(first))]
        for number, at in enumerate(range(copied_from, current.size, part_size), start=2):
            parts.append(_copy_part(calls, key, upload_id, number, current.etag, at, min(at + part_size, current.size)))
        calls.call(f"the completion of a rewrite of {key}", lambda: calls.client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))
    except ClientError as exc:
        s3_objects.abort(calls, key, upload_id)
        raise translate(exc, calls.settings, f"a rewrite of {key}") from exc
    except PacsvaultError:
        s3_objects.abort(calls, key, upload_id)
        raise
    version = s3_objects.verify(calls, key, current.size, None)
    if s3_objects.read_range(calls, key, 0, copied_from) != bytes(first):
        raise Unavailable(f"object store {calls.settings.label}: the rewrite of {key} did not read back")
    return version


def _send_part(calls: S3Calls, key: str, upload_id: str, piece: bytes) -> dict[str, Any]:
    md5 = base64.b64encode(hashlib.md5(piece, usedforsecurity=False).digest()).decode()
    response = calls.call(f"part 1 of a rewrite of {key}", lambda: calls.client.upload_part(
        Bucket=calls.settings.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=piece, ContentMD5=md5))
    return {"PartNumber": 1, "ETag": response["ETag"]}


def _copy_part(calls: S3Calls, key: str, upload_id: str, number: int, etag: str, start: int, end: int) -> dict[str, Any]:
    response = calls.call(f"part {number} of a rewrite of {key}", lambda: calls.client.upload_part_copy(
        Bucket=calls.settings.bucket, Key=key, UploadId=upload_id, PartNumber=number,
        CopySource={"Bucket": calls.settings.bucket, "Key": key}, CopySourceRange=f"bytes={start}-{end - 1}",
        CopySourceIfMatch=f'"{etag}"'))
    return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}
