"""One object in the store: look it up, read a range of it, upload it verified (one PUT, or in parts).

An upload is verified before it returns, with the checksum every S3 store
knows (Ceph 16 knows no other): each PUT or part carries its Content-MD5,
which the store checks against the bytes it received (else BadDigest, and
nothing is stored), and the ETag the store answers is its own MD5 of what it
stored; for a multipart upload, the MD5 of the parts' MD5s with the part
count. An upload whose ETag or size does not match is removed again and the
call fails, so a later put starts clean.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pacsvault.daemon.errors import DataLoss, NotFound, Unavailable
from pacsvault.daemon.storage.s3_client import S3Calls, describe, error_code, translate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    """An object as the store describes it."""

    size: int
    etag: str
    version_id: str  # "null" where the bucket keeps no versions
    headers: Mapping[str, Any]


def head(calls: S3Calls, key: str) -> Stored | None:
    """The object's size and ETag, or None when there is none."""
    def attempt() -> Stored | None:
        try:
            r = calls.client.head_object(Bucket=calls.settings.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Stored(int(r["ContentLength"]), r["ETag"].strip('"'), r.get("VersionId") or "null", r)
    try:
        return calls.call(f"a look-up of {key}", attempt)
    except ClientError as exc:
        raise translate(exc, calls.settings, f"a look-up of {key}") from exc


def read_range(calls: S3Calls, key: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of the object: NotFound when it is gone, DataLoss when it ends sooner."""
    def attempt() -> bytes | None:
        try:
            r = calls.client.get_object(Bucket=calls.settings.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        except ClientError as exc:
            if error_code(exc) == "InvalidRange":
                return None
            raise
        return bytes(r["Body"].read())
    what = f"a read of {key}"
    try:
        got = calls.call(what, attempt)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            raise NotFound(f"object {key} is not in object store {calls.settings.label}") from exc
        raise translate(exc, calls.settings, what) from exc
    if got is None or len(got) != end - start:
        raise DataLoss(f"object {key} in object store {calls.settings.label} is shorter than it was "
                       f"(bytes {start}-{end - 1} asked, {len(got or b'')} read)")
    return got


def upload(calls: S3Calls, key: str, data: bytes, *, if_absent: bool, extra: Mapping[str, Any] | None = None) -> str | None:
    """Stores ``data`` under ``key``, verified; returns the new version id ("null" unversioned).

    ``if_absent`` asks the store not to replace an object that is there
    (If-None-Match: *; one PUT only): None when it was. Ceph honours it on
    buckets without versions only, and multipart uploads cannot carry it,
    so callers look before they upload there.
    ``extra`` are further PutObject fields (the Object Lock of a rewritten object).
    """
    try:
        if len(data) > calls.settings.multipart_threshold:
            return _multipart(calls, key, data, dict(extra or {}))
        return _single(calls, key, data, if_absent, dict(extra or {}))
    except ClientError as exc:
        raise translate(exc, calls.settings, f"the upload of {key}") from exc


def _single(calls: S3Calls, key: str, data: bytes, if_absent: bool, extra: dict[str, Any]) -> str | None:
    md5 = hashlib.md5(data, usedforsecurity=False)
    fields = {"Bucket": calls.settings.bucket, "Key": key, "Body": data, "ContentLength": len(data),
              "ContentMD5": base64.b64encode(md5.digest()).decode(), **extra}
    if if_absent:
        fields["IfNoneMatch"] = "*"

    def attempt() -> dict[str, Any] | None:
        try:
            return dict(calls.client.put_object(**fields))
        except ClientError as exc:
            if error_code(exc) == "PreconditionFailed":
                return None  # already there (or stored meanwhile by another writer)
            raise
    response = calls.call(f"the upload of {key}", attempt)
    if response is None:
        return None
    version = response.get("VersionId") or "null"
    etag = str(response.get("ETag", "")).strip('"')
    if etag != md5.hexdigest():
        _discard(calls, key, version)
        raise Unavailable(f"object store {calls.settings.label}: the upload of {key} did not verify "
                          f"(sent MD5 {md5.hexdigest()}, the store answered {etag or 'no ETag'}); removed it")
    return version


def _multipart(calls: S3Calls, key: str, data: bytes, extra: dict[str, Any]) -> str:
    bucket, part_size = calls.settings.bucket, calls.settings.part_size
    created = calls.call(f"the start of a multipart upload of {key}",
                         lambda: calls.client.create_multipart_upload(Bucket=bucket, Key=key, **extra))
    upload_id = created["UploadId"]
    digests: list[bytes] = []
    try:
        parts = []
        for number, at in enumerate(range(0, len(data), part_size), start=1):
            parts.append(_part(calls, key, upload_id, number, data[at : at + part_size], digests))
        _complete(calls, key, upload_id, parts)
    except BaseException:
        abort(calls, key, upload_id)
        raise
    expected = f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"
    return verify(calls, key, len(data), expected)


def _part(calls: S3Calls, key: str, upload_id: str, number: int, piece: bytes, digests: list[bytes]) -> dict[str, Any]:
    md5 = hashlib.md5(piece, usedforsecurity=False)
    response = calls.call(f"part {number} of the upload of {key}", lambda: calls.client.upload_part(
        Bucket=calls.settings.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=piece,
        ContentLength=len(piece), ContentMD5=base64.b64encode(md5.digest()).decode()))
    etag = str(response["ETag"]).strip('"')
    if etag != md5.hexdigest():
        raise Unavailable(f"object store {calls.settings.label}: part {number} of {key} did not verify "
                          f"(sent MD5 {md5.hexdigest()}, the store answered {etag})")
    digests.append(md5.digest())
    return {"PartNumber": number, "ETag": response["ETag"]}


def _complete(calls: S3Calls, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
    def attempt() -> None:
        try:
            calls.client.complete_multipart_upload(Bucket=calls.settings.bucket, Key=key, UploadId=upload_id,
                                                   MultipartUpload={"Parts": parts})
        except ClientError as exc:
            # A retry after an answer that was lost: the first try completed it; verify() decides.
            if error_code(exc) != "NoSuchUpload":
                raise
    calls.call(f"the completion of the upload of {key}", attempt)


def verify(calls: S3Calls, key: str, size: int, etag: str | None) -> str:
    """Checks the object now under ``key`` has ``size`` bytes (and ``etag``); its version id."""
    stored = head(calls, key)
    if stored is None or stored.size != size or (etag is not None and stored.etag != etag):
        found = "nothing" if stored is None else f"{stored.size} bytes, ETag {stored.etag}"
        if stored is not None:
            _discard(calls, key, stored.version_id)
        raise Unavailable(f"object store {calls.settings.label}: the upload of {key} did not verify "
                          f"(expected {size} bytes, ETag {etag}; found {found})")
    return stored.version_id


def abort(calls: S3Calls, key: str, upload_id: str) -> None:
    """Frees the parts of a failed upload, best effort: the store's lifecycle rules clean up the rest."""
    try:
        calls.client.abort_multipart_upload(Bucket=calls.settings.bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoCoreError) as exc:  # the upload's own error is the one to report
        log.warning("object store %s: could not abort an upload of %s (%s); the bucket's lifecycle rules "
                    "should remove incomplete uploads", calls.settings.label, key, describe(exc))


def _discard(calls: S3Calls, key: str, version_id: str) -> None:
    """Removes one object version that failed verification, best effort."""
    fields: dict[str, Any] = {"Bucket": calls.settings.bucket, "Key": key}
    if version_id != "null":
        fields["VersionId"] = version_id
    try:
        calls.client.delete_object(**fields)
    except (ClientError, BotoCoreError) as exc:  # the verification error is the one to report
        log.warning("object store %s: could not remove the unverified upload of %s (%s)",
                    calls.settings.label, key, describe(exc))
