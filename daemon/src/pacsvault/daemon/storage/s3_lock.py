"""S3 Object Lock on blob objects: legal holds and retention, so the store itself refuses an early delete.

Object Lock is a property of the bucket, chosen when it is created (it turns
versioning on); the store's administrator makes it so. On such a bucket:

- a legal hold (ON / OFF) keeps an object version until it is lifted;
- a retention date keeps it until then; in COMPLIANCE mode nobody can
  shorten it or delete the version early, in GOVERNANCE mode a user with
  the bypass permission can.

Both apply to one object version; a DELETE without a version id only
stacks a delete marker on it and the held bytes stay. Measured against
Ceph RGW 16.2: a delete of a held version answers AccessDenied "forbidden
by object lock", shortening a retention AccessDenied, a hold on a bucket
without Object Lock InvalidRequest.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from pacsvault.daemon.errors import FailedPrecondition, InvalidInput, NotFound
from pacsvault.daemon.storage.s3_client import S3Calls, error_code, translate

MODES = ("COMPLIANCE", "GOVERNANCE")


@dataclass(frozen=True)
class ObjectLockState:
    legal_hold: bool
    mode: str | None  # COMPLIANCE, GOVERNANCE or None
    retain_until_epoch_s: float | None


def set_legal_hold(calls: S3Calls, key: str, on: bool) -> None:
    status = "ON" if on else "OFF"
    _lock_call(calls, key, f"a legal hold {status} on {key}", lambda: calls.client.put_object_legal_hold(
        Bucket=calls.settings.bucket, Key=key, LegalHold={"Status": status}))


def set_retention(calls: S3Calls, key: str, until_epoch_s: float, mode: str = "COMPLIANCE") -> None:
    if mode not in MODES:
        raise InvalidInput(f"retention mode must be one of {', '.join(MODES)}, not {mode!r}")
    until = datetime.datetime.fromtimestamp(until_epoch_s, datetime.timezone.utc)
    if until <= datetime.datetime.now(datetime.timezone.utc):
        raise InvalidInput(f"a retention date must be in the future, not {until.isoformat()}")
    _lock_call(calls, key, f"a {mode} retention until {until.isoformat()} on {key}",
               lambda: calls.client.put_object_retention(Bucket=calls.settings.bucket, Key=key,
                                                         Retention={"Mode": mode, "RetainUntilDate": until}))


def lock_state(calls: S3Calls, key: str) -> ObjectLockState:
    """The hold and retention of the object's current version, as its HEAD shows them."""
    def attempt() -> Mapping[str, Any]:
        return dict(calls.client.head_object(Bucket=calls.settings.bucket, Key=key))
    try:
        head = calls.call(f"a look-up of {key}", attempt)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey"):
            raise NotFound(f"object {key} is not in object store {calls.settings.label}") from exc
        raise translate(exc, calls.settings, f"a look-up of {key}") from exc
    until = head.get("ObjectLockRetainUntilDate")
    return ObjectLockState(legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
                           mode=head.get("ObjectLockMode"),
                           retain_until_epoch_s=until.timestamp() if until is not None else None)


def carried_over(head: Mapping[str, Any]) -> dict[str, Any]:
    """PutObject fields giving a rewritten object the hold and retention of the one it replaces."""
    fields: dict[str, Any] = {}
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        fields["ObjectLockLegalHoldStatus"] = "ON"
    until = head.get("ObjectLockRetainUntilDate")
    if head.get("ObjectLockMode") and until is not None and until > datetime.datetime.now(datetime.timezone.utc):
        fields["ObjectLockMode"] = head["ObjectLockMode"]
        fields["ObjectLockRetainUntilDate"] = until
    return fields


def is_lock_refusal(exc: ClientError) -> bool:
    """The store refused because of Object Lock (RGW: "forbidden by object lock"; AWS: "...object lock")."""
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return error_code(exc) == "AccessDenied" and "object lock" in message


def _lock_call(calls: S3Calls, key: str, what: str, attempt: Any) -> None:
    try:
        calls.call(what, attempt)
    except ClientError as exc:
        code, message = error_code(exc), str(exc.response.get("Error", {}).get("Message", ""))
        if code == "NoSuchKey":
            raise NotFound(f"object {key} is not in object store {calls.settings.label}") from exc
        if code == "InvalidRequest" or code == "ObjectLockConfigurationNotFoundError":
            raise FailedPrecondition(f"bucket {calls.settings.bucket!r} of object store {calls.settings.label} "
                                     f"has no Object Lock: it must be created with it ({message})") from exc
        if code == "AccessDenied" and ("retention" in message or "governance" in message or "mode" in message):
            raise FailedPrecondition(f"object store {calls.settings.label} refused {what}: {message}") from exc
        raise translate(exc, calls.settings, what) from exc
