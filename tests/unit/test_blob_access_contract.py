"""One contract, every blob layer: the in-memory twin, local disk, and stacks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.crypto.keyring import Keyring, KeyringHolder
from pacsvault.daemon.digest import compute
from pacsvault.daemon.errors import DataLoss, NotFound, StorageFull, Unavailable
from pacsvault.daemon.storage import blob_format
from pacsvault.daemon.storage.blob_access import BlobAccess, BlobFile, iter_chunks, read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.local import MARKER_NAME, LocalBlobAccess
from pacsvault.daemon.storage.memory import MemoryBlobAccess
from pacsvault.daemon.storage.s3 import S3BlobAccess
from pacsvault.daemon.storage.tiered import Tier, TieredBlobStore, Usage, Volume, Watermarks
from tests.s3_support import s3_access

SEALER = BlobSealer(ApplianceKeys.from_holder(KeyringHolder(Keyring.generate("test"), None)))

STACKS: dict[str, Callable[[Path], BlobAccess]] = {
    "memory": lambda _: MemoryBlobAccess(),
    "sealed(memory)": lambda _: CompressingBlobAccess(MemoryBlobAccess(), frame_size=4096, sealer=SEALER),
    "sealed(local)": lambda root: CompressingBlobAccess(LocalBlobAccess.open_or_create(root), frame_size=4096,
                                                        sealer=SEALER),
    "local": lambda root: LocalBlobAccess.open_or_create(root),
    "compressing(memory)": lambda _: CompressingBlobAccess(MemoryBlobAccess(), frame_size=4096),
    "compressing(local)": lambda root: CompressingBlobAccess(LocalBlobAccess.open_or_create(root), frame_size=4096),
}


# The object-store layer on the real test Ceph (tests/ceph_cluster.py), alone and under the
# compressing layer as a tier would stack it; each test gets a bucket of its own.
S3_STACKS: dict[str, Callable[[S3BlobAccess], BlobAccess]] = {
    "s3": lambda s3: s3,
    "compressing(s3)": lambda s3: CompressingBlobAccess(s3, frame_size=4096),
    "sealed(s3)": lambda s3: CompressingBlobAccess(s3, frame_size=4096, sealer=SEALER),
}


@pytest.fixture(params=[*STACKS, *S3_STACKS])
def access(request: pytest.FixtureRequest, tmp_path: Path) -> BlobAccess:
    if request.param in S3_STACKS:
        s3 = s3_access(request.getfixturevalue("ceph"), request.getfixturevalue("monkeypatch"))
        return S3_STACKS[request.param](s3)
    return STACKS[request.param](tmp_path / "volume")


PAYLOADS = {
    "empty": b"",
    "one byte": b"x",
    "exactly one frame": bytes(range(256)) * 16,
    "frames and a tail": os.urandom(3 * 4096 + 123),
    "compressible": b"DICOM" * 10000,
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_put_then_open_returns_the_same_bytes(access: BlobAccess, name: str) -> None:
    data = PAYLOADS[name]
    digest = compute(data)
    assert not access.contains(digest)
    access.put(digest, data)
    assert access.contains(digest)
    reader = access.open(digest)
    assert reader.size == len(data)
    assert read_all(reader) == data
    reader.close()


def test_ranged_reads_cross_frame_boundaries(access: BlobAccess) -> None:
    data = os.urandom(5 * 4096 + 7)
    digest = compute(data)
    access.put(digest, data)
    reader = access.open(digest)
    for offset, length in [(0, 10), (4090, 20), (4096, 4096), (8000, 9000), (len(data) - 3, 100), (len(data), 5)]:
        assert reader.read_at(offset, length) == data[offset : offset + length]
    assert b"".join(iter_chunks(reader, 1000, offset=100)) == data[100:]
    file = BlobFile(reader)
    file.seek(-10, 2)
    assert file.read() == data[-10:]


def test_put_is_idempotent_and_delete_removes(access: BlobAccess) -> None:
    data = b"same bytes" * 100
    digest = compute(data)
    first = access.put(digest, data)
    assert access.put(digest, data) == first
    access.delete(digest)
    assert not access.contains(digest)
    access.delete(digest)  # absent: not an error
    with pytest.raises(NotFound):
        access.open(digest)


def test_compressed_blob_is_self_describing(tmp_path: Path) -> None:
    local = LocalBlobAccess.open_or_create(tmp_path / "v")
    data = b"\x00\x01" * 50000
    digest = compute(data)
    CompressingBlobAccess(local, frame_size=8192).put(digest, data)
    raw = local.path_of(digest).read_bytes()
    assert raw[:4] == b"PVBL" and raw[4] == blob_format.FORMAT_VERSION
    header, slots = blob_format.decode(raw, "test")
    assert header.digest == digest and not header.sealed and slots == ()
    assert header.codec is blob_format.Codec.ZSTD_FRAMES
    assert len(header.frame_lengths) == 13
    assert len(raw) < len(data) / 10


def test_a_flipped_bit_is_data_loss_never_wrong_bytes() -> None:
    inner = MemoryBlobAccess()
    access = CompressingBlobAccess(inner, frame_size=4096)
    data = os.urandom(3 * 4096)
    digest = compute(data)
    access.put(digest, data)
    header_len = access.open(digest).header.encoded_size
    inner.corrupt(digest, header_len + 4096 + 100)  # inside the second frame
    reader = access.open(digest)
    assert reader.read_at(0, 4096) == data[:4096]  # the first frame is intact
    with pytest.raises(DataLoss, match="frame 1"):
        reader.read_at(4096, 10)
    inner.corrupt(digest, 10)  # now the header
    with pytest.raises(DataLoss, match="header"):
        access.open(digest)


def test_unknown_format_version_is_refused() -> None:
    inner = MemoryBlobAccess()
    access = CompressingBlobAccess(inner)
    digest = compute(b"abc")
    encoded = bytearray(access.encode(digest, b"abc"))
    encoded[4] = 99
    inner.put(digest, bytes(encoded))
    with pytest.raises(DataLoss, match="version 99"):
        access.open(digest)


def test_local_leaves_no_temp_files_and_cleans_crash_leftovers(tmp_path: Path) -> None:
    local = LocalBlobAccess.open_or_create(tmp_path / "v")
    data = b"x" * 1000
    local.put(compute(data), data)
    assert list((tmp_path / "v" / "tmp").iterdir()) == []
    (tmp_path / "v" / "tmp" / "abc.123.tmp").write_bytes(b"half")
    assert local.clean_tmp() == 1
    assert list((tmp_path / "v" / "tmp").iterdir()) == []


def test_volume_marker_identity_and_refusal(tmp_path: Path) -> None:
    first = LocalBlobAccess.open_or_create(tmp_path / "v")
    assert LocalBlobAccess.open_or_create(tmp_path / "v").volume_id == first.volume_id
    first.put(compute(b"blob"), b"blob")
    # A volume holding blobs whose marker is gone is most likely another disk.
    (tmp_path / "v" / MARKER_NAME).unlink()
    with pytest.raises(Unavailable, match="no .pacsvault-volume marker"):
        LocalBlobAccess.open_or_create(tmp_path / "v")


def _volume(tier: str, root: Path, used: int, free: int, reserve: int = 0, high: float = 0.85) -> Volume:
    local = LocalBlobAccess.open_or_create(root)
    return Volume(tier, local.volume_id, str(root), local, local, Watermarks(high, 0.5, reserve),
                  lambda: Usage(used + free, used, free), device=os.stat(root).st_dev)


def test_tiered_places_on_first_tier_with_room_and_finds_anywhere(tmp_path: Path) -> None:
    hot = _volume("hot", tmp_path / "hot", used=800, free=200)  # 80% full, high watermark 85%
    cold_small = _volume("capacity", tmp_path / "c1", used=0, free=10_000)
    cold_big = _volume("capacity", tmp_path / "c2", used=0, free=90_000)
    store = TieredBlobStore([Tier("hot", [hot]), Tier("capacity", [cold_small, cold_big])])
    small, large = b"s" * 10, b"L" * 100
    location = store.place(compute(small), small).location
    assert location.tier == "hot"
    # 800 + 100 would pass the 85% high watermark: the capacity tier takes it, on its emptiest volume.
    location = store.place(compute(large), large).location
    assert (location.tier, location.volume_id) == ("capacity", cold_big.volume_id)
    assert read_all(store.open(compute(large))) == large  # no hint: searched
    with pytest.raises(StorageFull, match="no tier has room"):
        store.place(compute(b"x" * 100_000), b"x" * 100_000)


def test_reserve_failed_and_draining_volumes_take_nothing(tmp_path: Path) -> None:
    volume = _volume("hot", tmp_path / "v", used=0, free=1000, reserve=950)
    assert volume.accepts(50) and not volume.accepts(51)
    volume.draining = True
    assert not volume.accepts(1)
    volume.draining, volume.failed = False, "I/O error"
    assert not volume.accepts(1)
