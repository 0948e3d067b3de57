"""The object-store layer against a real Ceph RADOS Gateway: what it sends, what it stores, how it fails.

The shared contract (put, open, ranged reads, delete) runs over this layer in
tests/unit/test_blob_access_contract.py; here is what only an object store has.
Requests are counted with botocore's own event hooks, on the HTTP requests
really sent; changes "behind our back" go through a separate plain client.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.crypto.keyring import KeyringHolder, load_file
from pacsvault.daemon.digest import compute
from pacsvault.daemon.errors import DataLoss, NotFound
from pacsvault.daemon.storage import blob_format
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.s3 import S3BlobAccess
from tests.ceph_cluster import CephCluster
from tests.s3_support import plain_client, s3_access

PHI = b"DOE^JANE^Q 1931-04-02 MRN-8812-ANONYMISE-ME"
KEY = re.compile(r"blobs/blake3/[0-9a-f]{2}/[0-9a-f]{64}")


class Requests:
    """Every request the layer's client sends: operation name and Range header."""

    def __init__(self, access: S3BlobAccess) -> None:
        self.sent: list[tuple[str, str | None]] = []
        access.client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        self.sent.append((event_name.split(".")[2], request.headers.get("Range")))

    def of(self, operation: str) -> list[str | None]:
        return [rng.decode() if isinstance(rng, bytes) else rng for op, rng in self.sent if op == operation]

    def clear(self) -> None:
        self.sent.clear()


@pytest.fixture
def s3(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> S3BlobAccess:
    return s3_access(ceph, monkeypatch, head_bytes=4096, readahead_bytes=4096)


@pytest.fixture
def holder(tmp_path: Path) -> KeyringHolder:
    path = tmp_path / "keys" / "keyring.json"
    return KeyringHolder(load_file(path, create=True), path)


def _sealed(s3: S3BlobAccess, holder: KeyringHolder, frame_size: int = 4096) -> CompressingBlobAccess:
    return CompressingBlobAccess(s3, frame_size=frame_size, sealer=BlobSealer(ApplianceKeys.from_holder(holder)))


def _object(ceph: CephCluster, s3: S3BlobAccess, key: str) -> bytes:
    return bytes(plain_client(ceph).get_object(Bucket=s3.settings.bucket, Key=key)["Body"].read())


def test_objects_are_the_stored_form_named_by_address_without_phi(
        ceph: CephCluster, s3: S3BlobAccess, holder: KeyringHolder) -> None:
    sealed = _sealed(s3, holder)
    data = os.urandom(9000) + PHI + b"\x00" * 20000
    address = sealed.address(data)
    sealed.put(address, data)
    plain = plain_client(ceph)
    listing = plain.list_objects_v2(Bucket=s3.settings.bucket)["Contents"]
    assert [entry["Key"] for entry in listing] == [s3.key_of(address)]
    assert KEY.fullmatch(listing[0]["Key"]) and address.hex in listing[0]["Key"]
    head = plain.head_object(Bucket=s3.settings.bucket, Key=s3.key_of(address))
    assert head["Metadata"] == {}
    stored = _object(ceph, s3, s3.key_of(address))
    assert stored[:4] == b"PVBL" and PHI not in stored and PHI[:8] not in stored
    # Byte for byte what the layer above handed down: its header reads back from the object.
    header, _ = blob_format.decode(stored, "test")
    assert header.digest == address and header.sealed
    assert read_all(sealed.open(address)) == data


def test_a_whole_small_blob_is_one_request_and_a_ranged_read_fetches_only_its_frames(
        ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = s3_access(ceph, monkeypatch, head_bytes=64 << 10)
    framed = CompressingBlobAccess(s3, frame_size=64 << 10)
    small = os.urandom(30_000)
    framed.put(compute(small), small)
    large = os.urandom(10 * (64 << 10) + 123)  # incompressible: frames as large as the data
    framed.put(compute(large), large)
    requests = Requests(s3)

    assert read_all(framed.open(compute(small))) == small
    assert requests.of("GetObject") == ["bytes=0-65535"]

    requests.clear()
    reader = framed.open(compute(large))
    offset = 5 * (64 << 10) + 1000
    assert reader.read_at(offset, 100) == large[offset : offset + 100]
    ranges = requests.of("GetObject")
    assert len(ranges) == 2 and ranges[0] == "bytes=0-65535"
    start, end = (int(x) for x in ranges[1].removeprefix("bytes=").split("-"))  # type: ignore[union-attr]
    # Exactly frame 5 as stored, nothing of its neighbours.
    offsets = reader.header.frame_offsets()
    assert (start, end + 1) == (offsets[5], offsets[5] + reader.header.frame_lengths[5])
    assert sum(1 for op, _ in requests.sent if op != "GetObject") == 0


def test_a_blob_read_whole_is_fetched_once_in_large_ranges(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = s3_access(ceph, monkeypatch, head_bytes=64 << 10, readahead_bytes=1 << 20)
    framed = CompressingBlobAccess(s3, frame_size=64 << 10)
    data = os.urandom(40 * (64 << 10))  # 40 frames, 2.5 MiB
    framed.put(compute(data), data)
    requests = Requests(s3)
    reader = framed.open(compute(data))
    assert read_all(reader) == data
    spans = [tuple(int(x) for x in rng.removeprefix("bytes=").split("-"))  # type: ignore[union-attr]
             for rng in requests.of("GetObject")]
    # Back to back from byte 0 to the last: nothing fetched twice, nothing skipped.
    assert spans[0][0] == 0 and spans[-1][1] == reader.stored_size - 1
    assert all(before[1] + 1 == after[0] for before, after in zip(spans, spans[1:]))
    # Far fewer requests than frames: the first, then read-ahead of 1 MiB at a time.
    assert len(spans) == 1 + -(-(reader.stored_size - (64 << 10)) // (1 << 20))
    assert max(end - start + 1 for start, end in spans) == 1 << 20


def test_a_blob_above_the_threshold_goes_in_verified_parts(ceph: CephCluster, s3: S3BlobAccess) -> None:
    data = os.urandom(13 << 20)  # parts of 5, 5 and 3 MiB
    digest = compute(data)
    requests = Requests(s3)
    assert s3.put(digest, data) == len(data)
    assert requests.of("UploadPart") == [None, None, None]
    assert len(requests.of("CreateMultipartUpload")) == 1 and len(requests.of("CompleteMultipartUpload")) == 1
    head = plain_client(ceph).head_object(Bucket=s3.settings.bucket, Key=s3.key_of(digest))
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(data)
    assert _object(ceph, s3, s3.key_of(digest)) == data
    reader = s3.open(digest)
    assert reader.read_at((5 << 20) - 10, 20) == data[(5 << 20) - 10 : (5 << 20) + 10]
    requests.clear()
    assert s3.put(digest, data) == len(data)  # idempotent: one look-up, no upload
    assert [op for op, _ in requests.sent] == ["HeadObject"]


@pytest.mark.parametrize("object_lock", [False, True], ids=["unversioned", "versioned"])
def test_a_put_is_one_request_and_never_replaces_a_stored_blob(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch,
                                                              object_lock: bool) -> None:
    s3 = s3_access(ceph, monkeypatch, object_lock=object_lock)
    s3.check()  # as a daemon does at start: it learns whether the bucket keeps versions
    data = os.urandom(20_000)
    digest = compute(data)
    requests = Requests(s3)
    assert s3.put(digest, data) == len(data)
    # Ceph honours If-None-Match only where the bucket keeps no versions; there the PUT alone suffices.
    assert [op for op, _ in requests.sent] == (["HeadObject", "PutObject"] if object_lock else ["PutObject"])
    requests.clear()
    assert s3.put(digest, os.urandom(20_000)) == len(data)  # other bytes, same address: left as stored
    assert "PutObject" not in [op for op, _ in requests.sent] or not object_lock
    assert read_all(s3.open(digest)) == data
    versions = plain_client(ceph).list_object_versions(Bucket=s3.settings.bucket, Prefix=s3.key_of(digest))
    assert len(versions["Versions"]) == 1


def test_an_object_deleted_behind_our_back_is_not_found(ceph: CephCluster, s3: S3BlobAccess) -> None:
    data = os.urandom(10_000)
    digest = compute(data)
    s3.put(digest, data)
    reader = s3.open(digest)
    plain_client(ceph).delete_object(Bucket=s3.settings.bucket, Key=s3.key_of(digest))
    assert not s3.contains(digest)
    with pytest.raises(NotFound, match="test-archive"):
        s3.open(digest)
    with pytest.raises(NotFound):
        reader.read_at(5000, 100)  # past what open() cached


def test_an_object_changed_behind_our_back_is_data_loss(ceph: CephCluster, s3: S3BlobAccess,
                                                        holder: KeyringHolder) -> None:
    sealed = _sealed(s3, holder)
    data = os.urandom(6 * 4096)
    address = sealed.address(data)
    sealed.put(address, data)
    key = s3.key_of(address)
    stored = bytearray(_object(ceph, s3, key))
    header, _ = blob_format.decode(bytes(stored), "test")
    stored[header.frame_offsets()[3] + 7] ^= 0x10  # one bit of frame 3
    plain_client(ceph).put_object(Bucket=s3.settings.bucket, Key=key, Body=bytes(stored))
    reader = sealed.open(address)
    assert reader.read_at(0, 4096) == data[:4096]
    with pytest.raises(DataLoss, match="frame 3"):
        reader.read_at(3 * 4096, 10)
    # Cut short: the reader opened before knows the old size; the store now ends sooner.
    plain_client(ceph).put_object(Bucket=s3.settings.bucket, Key=key, Body=bytes(stored[: header.frame_offsets()[4]]))
    with pytest.raises(DataLoss, match="shorter|truncated"):
        reader.read_at(5 * 4096, 10)
    with pytest.raises(DataLoss):
        read_all(sealed.open(address))


def test_overwrite_replaces_bytes_and_keeps_one_version(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # A versioned bucket (as every Object Lock bucket is): the old version goes once the new is verified.
    s3 = s3_access(ceph, monkeypatch, object_lock=True)
    for size in (50_000, 13 << 20):  # one PUT; parts copied by the store
        data = os.urandom(size)
        digest = compute(data)
        s3.put(digest, data)
        requests = Requests(s3)
        s3.overwrite(digest, 100, b"\xab" * 64)
        expected = data[:100] + b"\xab" * 64 + data[164:]
        assert read_all(s3.open(digest)) == expected
        versions = plain_client(ceph).list_object_versions(Bucket=s3.settings.bucket, Prefix=s3.key_of(digest))
        assert len(versions.get("Versions", [])) == 1
        if size > s3.settings.multipart_threshold:
            # Only the first part crossed the wire; the store copied the rest.
            assert len(requests.of("UploadPartCopy")) == 2 and len(requests.of("UploadPart")) == 1
    with pytest.raises(NotFound):
        s3.overwrite(compute(b"absent"), 0, b"x")


def test_rotation_and_shredding_on_the_object_store(ceph: CephCluster, s3: S3BlobAccess,
                                                    holder: KeyringHolder) -> None:
    sealed = _sealed(s3, holder)
    blobs = [os.urandom(5000) + PHI for _ in range(2)]
    addresses = [sealed.address(d) for d in blobs]
    for address, data in zip(addresses, blobs, strict=True):
        sealed.put(address, data)
    before = _object(ceph, s3, s3.key_of(addresses[0]))
    holder.rotate()
    assert sealed.rewrap(addresses[0]) and not sealed.rewrap(addresses[0])
    after = _object(ceph, s3, s3.key_of(addresses[0]))
    header, slots = blob_format.decode(after, "test")
    assert after[: header.slots_offset] == before[: header.slots_offset]
    assert after[header.encoded_size :] == before[header.encoded_size :]
    assert [s.generation for s in slots if s] == [1, 2]
    holder.retire(1)
    assert read_all(sealed.open(addresses[0])) == blobs[0]

    assert sealed.shred_keys(addresses[0])
    with pytest.raises(DataLoss, match="data key was destroyed"):
        sealed.open(addresses[0])
    # A delete on the store: every version gone, no rewrite first (it would gain nothing there).
    requests = Requests(s3)
    sealed.delete(addresses[1])
    assert not s3.contains(addresses[1])
    assert not requests.of("PutObject") and not requests.of("UploadPart")


def test_usage_counts_objects_and_bytes_against_a_quota(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = s3_access(ceph, monkeypatch, quota_bytes=1 << 20)
    sizes = [1000, 2000, 3000]
    for size in sizes:
        data = os.urandom(size)
        s3.put(compute(data), data)
    plain_client(ceph).put_object(Bucket=s3.settings.bucket, Key="not-ours/x", Body=b"elsewhere")
    usage = s3.usage()
    assert (usage.objects, usage.used, usage.total, usage.free) == (3, 6000, 1 << 20, (1 << 20) - 6000)
