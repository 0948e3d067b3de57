"""S3 Object Lock on the real Ceph RGW 16: the store itself refuses to delete a held blob early."""

from __future__ import annotations

import os
import time

import pytest

from pacsvault.daemon.digest import Digest, compute
from pacsvault.daemon.errors import FailedPrecondition, InvalidInput, NotFound
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.s3 import S3BlobAccess
from tests.ceph_cluster import CephCluster
from tests.s3_support import plain_client, s3_access


@pytest.fixture
def locked(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> S3BlobAccess:
    return s3_access(ceph, monkeypatch, object_lock=True)


def _stored(s3: S3BlobAccess, size: int = 3000) -> tuple[bytes, Digest]:
    data = os.urandom(size)
    digest = compute(data)
    s3.put(digest, data)
    return data, digest


def test_a_legal_hold_stops_a_delete_until_it_is_lifted(ceph: CephCluster, locked: S3BlobAccess) -> None:
    data, digest = _stored(locked)
    locked.set_legal_hold(digest, True)
    assert locked.lock_state(digest).legal_hold
    with pytest.raises(FailedPrecondition, match="legal hold or retention"):
        locked.delete(digest)
    assert read_all(locked.open(digest)) == data
    # Not even the store's own client gets the held version removed.
    key = locked.key_of(digest)
    version = plain_client(ceph).head_object(Bucket=locked.settings.bucket, Key=key)["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        plain_client(ceph).delete_object(Bucket=locked.settings.bucket, Key=key, VersionId=version)
    locked.set_legal_hold(digest, False)
    assert not locked.lock_state(digest).legal_hold
    locked.delete(digest)
    assert not locked.contains(digest)
    versions = plain_client(ceph).list_object_versions(Bucket=locked.settings.bucket, Prefix=key)
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")


def test_retention_stops_a_delete_until_its_date_and_cannot_be_shortened(locked: S3BlobAccess) -> None:
    data, digest = _stored(locked)
    until = time.time() + 4
    locked.set_retention(digest, until)
    state = locked.lock_state(digest)
    assert state.mode == "COMPLIANCE" and state.retain_until_epoch_s == pytest.approx(until, abs=1)
    with pytest.raises(FailedPrecondition, match="legal hold or retention"):
        locked.delete(digest)
    with pytest.raises(FailedPrecondition, match="shortens"):
        locked.set_retention(digest, until - 2)
    with pytest.raises(InvalidInput, match="in the future"):
        locked.set_retention(digest, time.time() - 10)
    assert read_all(locked.open(digest)) == data
    time.sleep(max(0.0, until - time.time()) + 1.5)
    locked.delete(digest)
    assert not locked.contains(digest)


def test_a_rewrite_keeps_the_hold_and_the_held_old_version(ceph: CephCluster, locked: S3BlobAccess) -> None:
    data, digest = _stored(locked)
    locked.set_legal_hold(digest, True)
    locked.overwrite(digest, 10, b"new bytes")
    assert read_all(locked.open(digest)) == data[:10] + b"new bytes" + data[19:]
    assert locked.lock_state(digest).legal_hold
    key = locked.key_of(digest)
    versions = plain_client(ceph).list_object_versions(Bucket=locked.settings.bucket, Prefix=key)["Versions"]
    assert len(versions) == 2  # the held old version stays until its hold is lifted
    with pytest.raises(FailedPrecondition):
        locked.delete(digest)
    assert read_all(locked.open(digest)) == data[:10] + b"new bytes" + data[19:]


def test_a_bucket_without_object_lock_says_so(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = s3_access(ceph, monkeypatch)
    _, digest = _stored(plain)
    with pytest.raises(FailedPrecondition, match="has no Object Lock"):
        plain.set_legal_hold(digest, True)
    with pytest.raises(FailedPrecondition, match="has no Object Lock"):
        plain.set_retention(digest, time.time() + 60)
    with pytest.raises(NotFound):
        plain.set_legal_hold(compute(b"absent"), True)
