"""Blobs sealed at rest: what a disk holds, what a flipped bit gets, rotation and shredding."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.crypto.keyring import Keyring, KeyringHolder, load_command, load_file
from pacsvault.daemon.digest import address_of, compute
from pacsvault.daemon.errors import ConfigError, DataLoss, FailedPrecondition
from pacsvault.daemon.storage import blob_format
from pacsvault.daemon.storage.blob_access import authenticated, read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.local import LocalBlobAccess

MARKER = b"CANARY-7f3a9c1e-PIXELS"


def _sealed(root: Path, holder: KeyringHolder) -> tuple[CompressingBlobAccess, LocalBlobAccess]:
    local = LocalBlobAccess.open_or_create(root)
    return CompressingBlobAccess(local, frame_size=4096, sealer=BlobSealer(ApplianceKeys.from_holder(holder))), local


@pytest.fixture
def holder(tmp_path: Path) -> KeyringHolder:
    path = tmp_path / "keys" / "keyring.json"
    return KeyringHolder(load_file(path, create=True), path)


@pytest.mark.parametrize("data", [MARKER * 3000, os.urandom(5000) + MARKER + os.urandom(9000)],
                         ids=["compressible", "incompressible"])
def test_the_disk_holds_no_plaintext_and_an_address_nobody_can_recompute(
        tmp_path: Path, holder: KeyringHolder, data: bytes) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    address = access.address(data)
    access.put(address, data)
    raw = local.path_of(address).read_bytes()
    assert MARKER not in raw and MARKER[:8] not in raw
    # The address is keyed: hashing a known file finds nothing on the disk.
    assert address != compute(data)
    assert not (tmp_path / "v" / "blobs" / "blake3" / compute(data).hex[:2] / compute(data).hex[2:4]
                / compute(data).hex).exists()
    assert read_all(access.open(address)) == data
    access.verify(address)


def test_already_compressed_data_is_sealed_without_zstd(tmp_path: Path, holder: KeyringHolder) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    data = os.urandom(3 * 4096 + 5)
    address = access.address(data)
    access.put(address, data)
    header, slots = blob_format.decode(local.path_of(address).read_bytes(), "test")
    assert header.sealed and header.codec is blob_format.Codec.IDENTITY
    assert [s is not None for s in slots] == [True, False]


def test_a_flipped_bit_anywhere_is_data_loss_never_wrong_bytes(tmp_path: Path, holder: KeyringHolder) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    data = os.urandom(3 * 4096)
    address = access.address(data)
    access.put(address, data)
    path = local.path_of(address)
    pristine = path.read_bytes()
    header, _ = blob_format.decode(pristine, "test")
    for offset, expected in [(header.frame_offsets()[1] + 100, "frame 1 fails authentication"),
                             (header.slots_offset + 40, "wrapped data key fails authentication"),
                             (10, "header")]:
        damaged = bytearray(pristine)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(DataLoss, match=expected):
            read_all(access.open(address))


def test_frames_cannot_be_moved_between_blobs(tmp_path: Path, holder: KeyringHolder) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    first, second = os.urandom(8192), os.urandom(8192)
    a, b = access.address(first), access.address(second)
    access.put(a, first)
    access.put(b, second)
    raw_a, raw_b = bytearray(local.path_of(a).read_bytes()), local.path_of(b).read_bytes()
    header, _ = blob_format.decode(bytes(raw_a), "test")
    at = header.frame_offsets()[1]
    raw_a[at:] = raw_b[at:]  # frame 1 of b, under a's header and key
    local.path_of(a).write_bytes(bytes(raw_a))
    with pytest.raises(DataLoss, match="frame 1"):
        read_all(access.open(a))


def test_another_intact_blob_in_its_place_is_data_loss(tmp_path: Path, holder: KeyringHolder) -> None:
    """Reads of a sealed blob trust its frames' tags instead of hashing the whole again (Retrieval.read),
    and those authenticate against the header's address: so the header must be the one asked for."""
    access, local = _sealed(tmp_path / "v", holder)
    first, second = os.urandom(8192), os.urandom(8192)
    a, b = access.address(first), access.address(second)
    access.put(a, first)
    access.put(b, second)
    reader = access.open(a)
    assert authenticated(reader) and read_all(reader) == first
    local.path_of(a).write_bytes(local.path_of(b).read_bytes())  # b's intact file under a's name
    with pytest.raises(DataLoss, match="holds blob"):
        access.open(a)


def test_another_keyring_opens_nothing(tmp_path: Path, holder: KeyringHolder) -> None:
    access, _ = _sealed(tmp_path / "v", holder)
    data = MARKER * 100
    address = access.address(data)
    access.put(address, data)
    stranger = CompressingBlobAccess(access._inner, sealer=BlobSealer(  # noqa: SLF001
        ApplianceKeys.from_holder(KeyringHolder(Keyring.generate("other"), None))))
    with pytest.raises(DataLoss, match="not sealed by this keyring|not in the keyring"):
        stranger.open(address)
    assert address_of(data, stranger.sealer.address_key) != address  # type: ignore[union-attr]


def test_rotation_rewraps_in_the_spare_slot_and_the_old_kek_can_then_go(tmp_path: Path, holder: KeyringHolder) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    blobs = [os.urandom(5000) for _ in range(3)]
    addresses = [access.address(d) for d in blobs]
    for address, data in zip(addresses, blobs, strict=True):
        access.put(address, data)
    before = local.path_of(addresses[0]).read_bytes()
    holder.rotate()
    assert access.rewrap(addresses[0]) and access.rewrap(addresses[1])
    assert not access.rewrap(addresses[0])  # already under the active KEK
    after = local.path_of(addresses[0]).read_bytes()
    header, slots = blob_format.decode(after, "test")
    # Only the spare slot changed; the frames and the old wrap are untouched.
    assert after[: header.slots_offset] == before[: header.slots_offset]
    assert after[header.encoded_size :] == before[header.encoded_size :]
    assert [s.generation for s in slots if s] == [1, 2]
    holder.retire(1)
    assert read_all(access.open(addresses[0])) == blobs[0]
    # Not re-wrapped before the old KEK went: unreadable, and the message says why.
    with pytest.raises(DataLoss, match="version 1 is not in the keyring"):
        access.open(addresses[2])


def test_a_torn_rewrap_leaves_the_blob_readable(tmp_path: Path, holder: KeyringHolder) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    data = os.urandom(5000)
    address = access.address(data)
    access.put(address, data)
    holder.rotate()
    access.rewrap(address)
    header, _ = blob_format.decode(local.path_of(address).read_bytes(), "test")
    # A crash mid-write of the new slot: half of it is garbage.
    local.overwrite(address, header.slots_offset + blob_format.SLOT_BYTES + 20, os.urandom(30))
    assert read_all(access.open(address)) == data


def test_deleting_the_last_copy_destroys_its_data_key_first(tmp_path: Path, holder: KeyringHolder) -> None:
    access, local = _sealed(tmp_path / "v", holder)
    data = MARKER * 200
    address = access.address(data)
    access.put(address, data)
    header, _ = blob_format.decode(local.path_of(address).read_bytes(), "test")
    assert access.shred_keys(address)
    raw = local.path_of(address).read_bytes()
    assert raw[header.slots_offset : header.encoded_size] == bytes(2 * blob_format.SLOT_BYTES)
    with pytest.raises(DataLoss, match="data key was destroyed"):
        access.open(address)
    access.delete(address)
    assert not local.contains(address)


def test_version_one_blobs_stay_readable(tmp_path: Path) -> None:
    plain = CompressingBlobAccess(LocalBlobAccess.open_or_create(tmp_path / "v"), frame_size=4096)
    data = b"written by the first release " * 500
    digest = compute(data)
    encoded = bytearray(plain.encode(digest, data))
    encoded[4] = 1  # the version byte; version 1 had no flags and the same table
    table_end = blob_format.fixed_header_size() + 4 * int.from_bytes(encoded[52:56], "little")
    encoded[table_end : table_end + 4] = zlib.crc32(bytes(encoded[:table_end])).to_bytes(4, "little")
    plain._inner.put(digest, bytes(encoded))  # noqa: SLF001
    assert read_all(plain.open(digest)) == data


def test_a_keyring_from_the_kms_hook_is_rotated_there_not_here(tmp_path: Path) -> None:
    source = tmp_path / "kms-output.json"
    source.write_text(Keyring.generate().to_json())
    ring = load_command(f"cat {source}")
    assert ring.source == "encryption.key_command" and ring.active == 1
    with pytest.raises(FailedPrecondition, match="rotate it in the KMS"):
        KeyringHolder(ring, None).rotate()
    with pytest.raises(ConfigError, match="exited 1: KMS unreachable"):
        load_command("echo 'KMS unreachable' >&2; exit 1")
