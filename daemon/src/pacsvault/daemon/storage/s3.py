"""Object-store layer: blobs as objects in one S3 bucket (Ceph RADOS Gateway, StorageGRID, ECS, MinIO, AWS).

It stands where ``LocalBlobAccess`` stands: it receives the stored form of a
blob (sealed, framed, from ``CompressingBlobAccess``) and keeps it as one
object, byte for byte, named by the blob's address::

    <key_prefix><digest function>/<first two hex digits>/<hex digest>

Keys and the objects' metadata hold nothing but the address: no DICOM, no
PHI. Reads are ranged GETs of exactly what is asked; ``open`` fetches the
header (and all of a small blob) with its one request. Every upload is
verified before ``put`` returns (see s3_objects). Where the bucket has Object
Lock, legal holds and retention go on the objects (see s3_lock), and the
store itself refuses to delete a held object early.

Errors: a missing object is NotFound, a short one DataLoss (a changed one is
caught by the layer above, whose frames authenticate themselves), a store
that is away, slow or refusing us is Unavailable naming it, within the
deadline of ``s3_client.S3Calls``.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from botocore.exceptions import ClientError

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import ConfigError, DataLoss, FailedPrecondition, NotFound, Unavailable
from pacsvault.daemon.storage import s3_lock, s3_rewrite, s3_objects
from pacsvault.daemon.storage.s3_client import S3Calls, S3Settings, error_code, make_client, translate
from pacsvault.daemon.storage.s3_lock import ObjectLockState
from pacsvault.daemon.storage.s3_state import S3StoreState, S3Usage, check_store, count_usage

log = logging.getLogger(__name__)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class S3Reader:
    """A BlobReader over one object: the first bytes from open(), the rest by ranged GETs.

    It holds one window of the object, the bytes it fetched last (open()'s
    first). A read that jumps elsewhere fetches exactly what it asks for. A
    read that goes on past the window is a blob being streamed (a retrieval,
    a promotion, a verify: frame after frame to the end), so it also fetches
    ``readahead`` bytes beyond: a large blob comes in a few requests instead
    of one per frame, each request costing a round trip to the gateway.
    """

    def __init__(self, calls: S3Calls, key: str, size: int, head: bytes, readahead: int) -> None:
        self._calls = calls
        self._key = key
        self._size = size
        self._window = (0, head)
        self._readahead = readahead

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(self._size, offset + max(0, length))
        if offset >= end:
            return b""
        start, held = self._window
        held_end = start + len(held)
        if start <= offset and end <= held_end:
            return held[offset - start : end - start]
        if start <= offset <= held_end:  # goes on from what is held: the rest, and ahead
            fetched = s3_objects.read_range(self._calls, self._key, held_end,
                                            min(self._size, max(end, held_end + self._readahead)))
            window = held[offset - start :] + fetched
        else:
            window = s3_objects.read_range(self._calls, self._key, offset, end)
        self._window = (offset, window)
        return window[: end - offset]

    def close(self) -> None:
        self._window = (0, b"")


class S3BlobAccess:
    """One bucket (and key prefix) of an S3 object store holding opaque blobs."""

    # A rewrite on an object store leaves the old bytes to its garbage collector, exactly as a
    # delete does: shredding the key slots before a delete would cost a whole rewrite for nothing
    # (and, on a held object, would destroy the blob the store then refuses to delete).
    shred_before_delete = False

    def __init__(self, settings: S3Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.calls = S3Calls(client if client is not None else make_client(settings), settings)
        self._versioned: bool | None = None

    @property
    def client(self) -> Any:
        return self.calls.client

    @property
    def label(self) -> str:
        return self.settings.label

    def key_of(self, digest: Digest) -> str:
        h = digest.hex
        return f"{self.settings.key_prefix}{digest.function.name.lower()}/{h[:2]}/{h}"

    def check(self) -> S3StoreState:
        """Start-up and health check: ConfigError for credentials or bucket, Unavailable when unreachable."""
        state = check_store(self.calls)
        self._versioned = bool(state.versioning)
        return state

    def _keeps_versions(self) -> bool:
        """Whether the bucket keeps versions (as of the last check): Ceph then ignores If-None-Match."""
        if self._versioned is None:
            try:
                self.check()
            except ConfigError as exc:  # found at work, not at start: the store is unusable for now
                raise Unavailable(str(exc)) from exc
        return bool(self._versioned)

    def usage(self) -> S3Usage:
        """Objects and bytes under the key prefix (a listing: one request per 1000 objects)."""
        return count_usage(self.calls)

    # -- BlobAccess ------------------------------------------------------------------------------

    def put(self, digest: Digest, data: bytes, *, sync: bool = True) -> int:
        """Idempotent: a blob already stored stays as it is (its stored form may differ: fresh data key).

        Durable on return whatever ``sync`` says: an object store acknowledges a PUT once it holds it,
        and a PUT is all or nothing, so a copy found there is never a half-written leftover.
        """
        return self.put_checked(digest, data)[0]

    def put_checked(self, digest: Digest, data: bytes) -> tuple[int, bool]:
        """As put; also says whether this call uploaded ``data`` (the store then checked it against
        our MD5: the object holds exactly these bytes) or found an object there already."""
        key = self.key_of(digest)
        # One PUT with If-None-Match where the store honours it; a look first where it does not.
        if self._keeps_versions() or len(data) > self.settings.multipart_threshold:
            existing = s3_objects.head(self.calls, key)
            if existing is not None:
                return existing.size, False
        if s3_objects.upload(self.calls, key, data, if_absent=True) is None:
            existing = s3_objects.head(self.calls, key)
            return (existing.size if existing is not None else len(data)), False
        return len(data), True

    def flush(self) -> None:
        """Nothing to do: every put is durable when it returns."""

    def open(self, digest: Digest) -> S3Reader:
        key = self.key_of(digest)
        want = self.settings.head_bytes

        def attempt() -> tuple[dict[str, Any], bytes] | None:
            try:
                r = self.client.get_object(Bucket=self.settings.bucket, Key=key, Range=f"bytes=0-{want - 1}")
            except ClientError as exc:
                if error_code(exc) == "InvalidRange":
                    return None  # an empty object has no byte 0
                raise
            return r, r["Body"].read()
        got = self._call(f"a read of blob {digest.hex[:16]}", attempt, digest)
        if got is None:
            return S3Reader(self.calls, key, self._size_of_empty(key, digest), b"", 0)
        response, head = got
        size = _total_size(response)
        if len(head) != min(want, size):
            raise DataLoss(f"blob {digest.hex[:16]} in object store {self.label}: read {len(head)} bytes "
                           f"of its first {min(want, size)}")
        return S3Reader(self.calls, key, size, head, self.settings.readahead_bytes)

    def contains(self, digest: Digest) -> bool:
        return s3_objects.head(self.calls, self.key_of(digest)) is not None

    def delete(self, digest: Digest) -> None:
        """Removes every version of the object, older ones first: one the store holds (Object Lock)
        stops the delete with the current version still in place."""
        key = self.key_of(digest)
        for version in s3_rewrite.versions_oldest_first(self.calls, key):
            try:
                s3_rewrite.delete_version(self.calls, key, version, f"the delete of blob {digest.hex[:16]}")
            except ClientError as exc:
                if s3_lock.is_lock_refusal(exc):
                    raise FailedPrecondition(
                        f"blob {digest.hex[:16]} is under a legal hold or retention in object store "
                        f"{self.label}; the store refuses to delete it before then") from exc
                raise translate(exc, self.settings, f"the delete of blob {digest.hex[:16]}") from exc

    def quarantine(self, digest: Digest, reason: str) -> str | None:
        """Moves a bad object aside (copied under the quarantine prefix with its reason, then removed):
        corrupt data is never silently deleted. The new key, or None when there was no object.
        An object under Object Lock stays where it is as well (the store refuses its delete)."""
        key = self.key_of(digest)
        if s3_objects.head(self.calls, key) is None:
            return None
        target = f"{self.settings.quarantine_prefix}{digest.hex}.{uuid.uuid4().hex[:8]}"
        what = f"the quarantine of blob {digest.hex[:16]}"
        try:
            self.calls.call(what, lambda: self.client.copy_object(
                Bucket=self.settings.bucket, Key=target, CopySource={"Bucket": self.settings.bucket, "Key": key},
                Metadata={"pacsvault-reason": reason[:200].encode("ascii", "replace").decode()}, MetadataDirective="REPLACE"))
        except ClientError as exc:
            raise translate(exc, self.settings, what) from exc
        try:
            self.delete(digest)
        except FailedPrecondition:
            log.warning("object store %s: blob %s is held by Object Lock; a copy is in quarantine and the held "
                        "object stays until its hold ends", self.label, digest.hex[:16])
        return target

    # -- rewrite (key rotation) -----------------------------------------------------------------

    def overwrite(self, digest: Digest, offset: int, data: bytes) -> None:
        """Replaces bytes of a stored blob (its key slots) by writing a whole new object.

        An object store changes nothing in place, but a PUT replaces an object
        atomically: readers see the old object or the new one, never neither.
        The new object keeps the old one's Object Lock; older versions are then
        removed where the store allows it (held ones stay until their hold ends).
        """
        key = self.key_of(digest)
        current = s3_objects.head(self.calls, key)
        if current is None:
            raise NotFound(f"blob {digest} is not in object store {self.label}")
        if offset < 0 or offset + len(data) > current.size:
            raise ValueError(f"overwrite of {len(data)} bytes at {offset} is outside blob {digest.hex[:16]}")
        lock = s3_lock.carried_over(current.headers)
        version: str | None
        copied_from = min(current.size, _round_up(offset + len(data), self.settings.part_size))
        if current.size > self.settings.multipart_threshold and copied_from < current.size:
            version = s3_rewrite.rewrite_by_copy(self.calls, key, current, offset, data, copied_from, lock)
        else:
            whole = bytearray(s3_objects.read_range(self.calls, key, 0, current.size))
            whole[offset : offset + len(data)] = data
            version = s3_objects.upload(self.calls, key, bytes(whole), if_absent=False, extra=lock)
        assert version is not None  # only an upload if_absent finds the object already there
        s3_rewrite.drop_older_versions(self.calls, key, keep=version)

    # -- Object Lock ----------------------------------------------------------------------------

    def stored_blobs(self) -> list[tuple[str, float]]:
        """(key, last modified as epoch seconds) of every blob object under the prefix, markers and
        quarantined objects left out: what an index rebuild reads (one request per 1000 objects)."""
        blob_key = re.compile(re.escape(self.settings.key_prefix) + r"[a-z0-9]+/[0-9a-f]{2}/[0-9a-f]{64}")

        def attempt() -> list[tuple[str, float]]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket,
                                                                           Prefix=self.settings.key_prefix)
            return [(entry["Key"], entry["LastModified"].timestamp()) for page in pages
                    for entry in page.get("Contents", []) if blob_key.fullmatch(entry["Key"])]
        try:
            return self.calls.call("a listing of the bucket", attempt)
        except ClientError as exc:
            raise translate(exc, self.settings, "a listing of the bucket") from exc

    def read_object(self, key: str) -> bytes:
        """The whole object at ``key`` (a key ``stored_blobs`` listed)."""
        def attempt() -> bytes:
            return self.client.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
        try:
            return self.calls.call(f"a read of {key}", attempt)
        except ClientError as exc:
            raise translate(exc, self.settings, f"a read of {key}") from exc

    def set_legal_hold(self, digest: Digest, on: bool) -> None:
        """Puts a legal hold on the blob's object (or lifts it): no delete while it is on."""
        s3_lock.set_legal_hold(self.calls, self.key_of(digest), on)

    def set_retention(self, digest: Digest, until_epoch_s: float, mode: str = "COMPLIANCE") -> None:
        """Keeps the blob's object until ``until_epoch_s``; COMPLIANCE can only ever be extended."""
        s3_lock.set_retention(self.calls, self.key_of(digest), until_epoch_s, mode)

    def lock_state(self, digest: Digest) -> ObjectLockState:
        return s3_lock.lock_state(self.calls, self.key_of(digest))

    # -- plumbing -------------------------------------------------------------------------------

    def _size_of_empty(self, key: str, digest: Digest) -> int:
        stored = s3_objects.head(self.calls, key)
        if stored is None:
            raise NotFound(f"blob {digest} is not in object store {self.label}")
        if stored.size != 0:
            raise DataLoss(f"blob {digest.hex[:16]} in object store {self.label}: {stored.size} bytes, no byte 0")
        return 0

    def _call(self, what: str, attempt: Any, digest: Digest) -> Any:
        try:
            return self.calls.call(what, attempt)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"blob {digest} is not in object store {self.label}") from exc
            raise translate(exc, self.settings, what) from exc


def _total_size(response: dict[str, Any]) -> int:
    match = _CONTENT_RANGE.fullmatch(str(response.get("ContentRange", "")))
    if match:
        return int(match.group(3))
    return int(response["ContentLength"])  # the store sent the whole object


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
