"""What a daemon asks an object store at start and in health: can we use the bucket, and how full is it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from botocore.exceptions import ClientError, SSLError

from pacsvault.daemon.errors import ConfigError, Unavailable
from pacsvault.daemon.storage.s3_client import S3Calls, describe, error_code, http_status, translate


@dataclass(frozen=True)
class S3StoreState:
    versioning: str  # "Enabled", "Suspended" or "" (never turned on)
    object_lock: bool
    latency_s: float  # of the check's first call


@dataclass(frozen=True)
class S3Usage:
    """Objects and bytes under the key prefix; an object store has no capacity but a configured quota."""

    objects: int
    used: int
    total: int  # the quota, 0 when none is set
    free: int  # quota less use (0 when none is set or it is used up)


def check_store(calls: S3Calls) -> S3StoreState:
    """ConfigError for what the operator must fix (credentials, bucket, permissions); Unavailable
    when the store does not answer in time."""
    started = time.monotonic()
    bucket = calls.settings.bucket
    try:
        versioning = calls.call("a check of the bucket", lambda: calls.client.get_bucket_versioning(Bucket=bucket))
    except ClientError as exc:
        raise _config_error(calls, exc) from exc
    except Unavailable as exc:
        if isinstance(exc.__cause__, SSLError):  # a certificate we cannot verify: the operator's to fix
            raise ConfigError(str(exc)) from exc
        raise
    latency = time.monotonic() - started

    def lock_enabled() -> bool:
        try:
            answer = calls.client.get_object_lock_configuration(Bucket=bucket)
        except ClientError as exc:
            if error_code(exc) == "ObjectLockConfigurationNotFoundError":
                return False
            raise
        return bool(answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")
    try:
        locked = calls.call("a check of the bucket's Object Lock", lock_enabled)
    except ClientError as exc:
        raise translate(exc, calls.settings, "a check of the bucket's Object Lock") from exc
    return S3StoreState(str(versioning.get("Status", "")), locked, latency)


def _config_error(calls: S3Calls, exc: ClientError) -> ConfigError:
    settings, code = calls.settings, error_code(exc)
    where = f"object store {settings.label} ({settings.endpoint})"
    if code == "NoSuchBucket" or http_status(exc) == 404:
        return ConfigError(f"{where}: bucket {settings.bucket!r} does not exist; create it (with Object Lock "
                           "where retention should bind the store) or correct the bucket name")
    if code == "InvalidAccessKeyId":
        return ConfigError(f"{where} does not know the access key we sent; check the S3 credentials "
                           "(AWS_ACCESS_KEY_ID, or the access key of the profile in the shared credentials file)")
    if code == "SignatureDoesNotMatch":
        return ConfigError(f"{where} refused the secret key for our access key; check the S3 credentials "
                           "(AWS_SECRET_ACCESS_KEY, or the secret of the profile in the shared credentials file)")
    if code == "AccessDenied" or http_status(exc) == 403:
        return ConfigError(f"{where}: the S3 user may not use bucket {settings.bucket!r} ({describe(exc)}); it "
                           "needs read, write, delete and list rights on it")
    return ConfigError(f"{where}: the bucket check failed: {describe(exc)}")


def count_usage(calls: S3Calls) -> S3Usage:
    """Lists the prefix (one request per 1000 objects): for a tier listing, not for every request."""
    settings = calls.settings

    def attempt() -> tuple[int, int]:
        objects = used = 0
        pages = calls.client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket,
                                                                        Prefix=settings.key_prefix)
        for page in pages:
            for entry in page.get("Contents", []):
                objects += 1
                used += int(entry["Size"])
        return objects, used
    try:
        objects, used = calls.call("a listing of the bucket", attempt)
    except ClientError as exc:
        raise translate(exc, settings, "a listing of the bucket") from exc
    quota = settings.quota_bytes
    return S3Usage(objects, used, quota, max(0, quota - used) if quota else 0)
