"""A crash before every request of a put, a rewrite or a delete: the blob is never missing or mixed.

The process "dies" just before its n-th request to the store: from then on
every request it would send raises (its cleanup included, as under kill -9),
so the store is left exactly as that moment left it. Then a fresh client
looks: a put left nothing or the whole verified blob; a rewrite left the old
bytes or the new, one of them always readable; a delete left the current
version readable until its very last request. Run again, each finishes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from pacsvault.daemon.digest import Digest, compute
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.s3 import S3BlobAccess
from tests.ceph_cluster import CephCluster
from tests.s3_support import plain_client, s3_access

pytestmark = pytest.mark.slow


class Crash(BaseException):
    """The process is gone: nothing after this point reaches the store."""


class CrashBefore:
    """Raises Crash for the n-th request and every one after it (counting from 0)."""

    def __init__(self, access: S3BlobAccess, n: int) -> None:
        self.n, self.sent = n, 0
        access.client.meta.events.register("before-send.s3", self)

    def __call__(self, **_: Any) -> None:
        self.sent += 1
        if self.sent > self.n:
            raise Crash


def _requests_of(access: S3BlobAccess, operation: Callable[[S3BlobAccess], object]) -> int:
    counter = CrashBefore(access, 10**6)
    operation(access)
    access.client.meta.events.unregister("before-send.s3", counter)
    return counter.sent


def _fresh(access: S3BlobAccess) -> S3BlobAccess:
    """Another process's view of the same bucket."""
    return S3BlobAccess(access.settings)


def _reads(access: S3BlobAccess, digest: Digest) -> bytes | None:
    return read_all(access.open(digest)) if access.contains(digest) else None


@pytest.mark.parametrize("size", [40_000, 13 << 20], ids=["one PUT", "multipart"])
def test_a_put_leaves_nothing_or_the_whole_blob(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch,
                                                 size: int) -> None:
    data = os.urandom(size)
    digest = compute(data)
    steps = _requests_of(s3_access(ceph, monkeypatch), lambda a: a.put(digest, data))
    for n in range(steps):
        access = s3_access(ceph, monkeypatch)
        CrashBefore(access, n)
        with pytest.raises(Crash):
            access.put(digest, data)
        after = _fresh(access)
        assert _reads(after, digest) in (None, data), f"crash before request {n}"
        after.put(digest, data)
        assert read_all(after.open(digest)) == data


@pytest.mark.parametrize("size", [40_000, 13 << 20], ids=["one PUT", "parts copied by the store"])
def test_a_rewrite_leaves_the_old_or_the_new_blob_never_neither(
        ceph: CephCluster, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    old = os.urandom(size)
    digest = compute(old)
    patch = b"\x5a" * 100
    new = old[:200] + patch + old[300:]
    template = s3_access(ceph, monkeypatch, object_lock=True)  # versioned, as Object Lock buckets are
    template.put(digest, old)
    steps = _requests_of(template, lambda a: a.overwrite(digest, 200, patch))
    for n in range(steps):
        access = s3_access(ceph, monkeypatch, object_lock=True)
        access.put(digest, old)
        CrashBefore(access, n)
        with pytest.raises(Crash):
            access.overwrite(digest, 200, patch)
        after = _fresh(access)
        assert _reads(after, digest) in (old, new), f"crash before request {n}"
        after.overwrite(digest, 200, patch)
        assert read_all(after.open(digest)) == new
        versions = plain_client(ceph).list_object_versions(Bucket=access.settings.bucket, Prefix=after.key_of(digest))
        assert len(versions["Versions"]) == 1 and not versions.get("DeleteMarkers")


def test_a_delete_keeps_the_current_version_readable_until_its_last_request(
        ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.urandom(30_000)
    digest = compute(old)
    new = b"\x01" + old[1:]

    def two_versions() -> S3BlobAccess:
        access = s3_access(ceph, monkeypatch, object_lock=True)
        access.put(digest, old)
        # A second version behind our back, as a rewrite whose clean-up did not run would leave.
        plain_client(ceph).put_object(Bucket=access.settings.bucket, Key=access.key_of(digest), Body=new)
        return access
    steps = _requests_of(two_versions(), lambda a: a.delete(digest))
    for n in range(steps):
        access = two_versions()
        CrashBefore(access, n)
        with pytest.raises(Crash):
            access.delete(digest)
        assert _reads(_fresh(access), digest) == new, f"crash before request {n}"
        _fresh(access).delete(digest)
        assert not _fresh(access).contains(digest)
