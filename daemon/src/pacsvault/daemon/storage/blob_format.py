"""The self-describing, versioned layout of a blob at rest.

Everything needed to read a blob, and to rebuild the index from the blobs
alone (given the keyring, when it is sealed), is in its header::

    offset size  field
    0      4     magic b"PVBL"
    4      1     format version (2; version 1 had no flags and no key slots)
    5      1     codec (0 identity, 1 zstd frames)
    6      1     digest function (pacsvault.v1.DigestFunction)
    7      1     flags: bit 0 sealed (frames are AES-256-GCM, the address is keyed)
    8      32    address: digest of the original bytes
    40     8     original length (u64 LE)
    48     4     frame size: original bytes per frame, the last may be shorter
    52     4     frame count
    56     4*n   stored length of each frame (with its GCM tag when sealed)
    56+4n  4     CRC-32 of everything above, so a damaged header is detected
    ...          sealed only: two key slots of SLOT_BYTES, then
    ...          frames, back to back

A key slot is a generation number (u32 LE, 0 = empty) and the blob's data
key wrapped under one version of the key-encryption key, authenticated with
the address. Two slots let a key rotation write the new wrap beside the old
one and fsync it before anything depends on it: a crash or a torn write
leaves at least one good slot. The slots are outside the CRC on purpose:
they change in place, and each authenticates itself.

Frames are independent zstd frames, each with its own content checksum; when
sealed, each is then encrypted under the blob's data key with its index as
the nonce and (address, index, count) as associated data, so a flipped bit,
a frame moved within or between blobs, or a truncated blob fails
authentication before any byte of it leaves the appliance.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from pacsvault.daemon.crypto.sealing import KeyWrapper
from pacsvault.daemon.digest import DIGEST_LENGTH, Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss

MAGIC = b"PVBL"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_FIXED = struct.Struct(f"<4sBBBB{DIGEST_LENGTH}sQII")
_U32 = struct.Struct("<I")
MAX_FRAMES = 1 << 24
FLAG_SEALED = 1
SLOT_COUNT = 2
SLOT_BYTES = 4 + KeyWrapper.WRAPPED_BYTES
EMPTY_SLOT = bytes(SLOT_BYTES)


class Codec(enum.IntEnum):
    IDENTITY = 0
    ZSTD_FRAMES = 1


@dataclass(frozen=True, slots=True)
class KeySlot:
    generation: int
    wrapped: bytes

    def encode(self) -> bytes:
        return _U32.pack(self.generation) + self.wrapped

    @classmethod
    def decode(cls, raw: bytes) -> KeySlot | None:
        """The slot, or None when it is empty (never written, or shredded)."""
        if len(raw) != SLOT_BYTES or raw == EMPTY_SLOT:
            return None
        (generation,) = _U32.unpack_from(raw)
        return cls(generation, bytes(raw[4:])) if generation else None


@dataclass(frozen=True, slots=True)
class BlobHeader:
    codec: Codec
    digest: Digest
    frame_size: int
    frame_lengths: tuple[int, ...]
    sealed: bool = False
    version: int = FORMAT_VERSION

    @property
    def table_size(self) -> int:
        """Fixed part, frame table and CRC: what the CRC protects, plus the CRC."""
        return _FIXED.size + 4 * len(self.frame_lengths) + 4

    @property
    def slots_offset(self) -> int:
        return self.table_size

    @property
    def encoded_size(self) -> int:
        return self.table_size + (SLOT_COUNT * SLOT_BYTES if self.sealed else 0)

    def frame_offsets(self) -> list[int]:
        """Offset of each frame in the stored blob."""
        offsets, at = [], self.encoded_size
        for length in self.frame_lengths:
            offsets.append(at)
            at += length
        return offsets

    def frame_aad(self, index: int) -> bytes:
        return self.digest.hash + _U32.pack(index) + _U32.pack(len(self.frame_lengths))

    def encode(self, slots: tuple[KeySlot | None, ...] = ()) -> bytes:
        """The header; ``slots`` (sealed blobs only) fill the key slots, the rest empty."""
        d = self.digest
        flags = FLAG_SEALED if self.sealed else 0
        fixed = _FIXED.pack(
            MAGIC, FORMAT_VERSION, self.codec, d.function, flags, d.hash,
            d.size_bytes, self.frame_size, len(self.frame_lengths),
        )
        table = b"".join(_U32.pack(n) for n in self.frame_lengths)
        parts = [fixed, table, _U32.pack(zlib.crc32(fixed + table))]
        if self.sealed:
            filled = list(slots) + [None] * (SLOT_COUNT - len(slots))
            parts.extend(slot.encode() if slot else EMPTY_SLOT for slot in filled)
        return b"".join(parts)


def fixed_header_size() -> int:
    return _FIXED.size


@dataclass(frozen=True, slots=True)
class FixedPart:
    version: int
    codec: Codec
    digest: Digest
    frame_size: int
    frame_count: int
    sealed: bool

    @property
    def table_size(self) -> int:
        return _FIXED.size + 4 * self.frame_count + 4

    @property
    def header_size(self) -> int:
        return self.table_size + (SLOT_COUNT * SLOT_BYTES if self.sealed else 0)


def decode_fixed(prefix: bytes, where: str) -> FixedPart:
    """Parses the fixed part, enough to know how long the whole header is."""
    if len(prefix) < _FIXED.size:
        raise DataLoss(f"{where}: blob shorter than its header ({len(prefix)} bytes)")
    magic, version, codec, function, flags, raw, size, frame_size, count = _FIXED.unpack_from(prefix)
    if magic != MAGIC:
        raise DataLoss(f"{where}: not a pacsvault blob (magic {magic!r})")
    if version not in _READABLE_VERSIONS:
        raise DataLoss(f"{where}: blob format version {version} is not readable by this version")
    try:
        digest = Digest(DigestFunction(function), raw, size)
        codec_value = Codec(codec)
    except ValueError as exc:
        raise DataLoss(f"{where}: damaged blob header ({exc})") from exc
    if count > MAX_FRAMES or frame_size == 0 or (version == 1 and flags):
        raise DataLoss(f"{where}: damaged blob header (frame count {count}, frame size {frame_size})")
    return FixedPart(version, codec_value, digest, frame_size, count, bool(flags & FLAG_SEALED))


def decode(header_bytes: bytes, where: str) -> tuple[BlobHeader, tuple[KeySlot | None, ...]]:
    """Parses a full header and checks its CRC; returns it and its key slots (sealed only)."""
    fixed = decode_fixed(header_bytes, where)
    end = _FIXED.size + 4 * fixed.frame_count
    if len(header_bytes) < fixed.header_size:
        raise DataLoss(f"{where}: blob header truncated")
    (crc,) = _U32.unpack_from(header_bytes, end)
    if zlib.crc32(header_bytes[:end]) != crc:
        raise DataLoss(f"{where}: blob header checksum mismatch")
    lengths = tuple(_U32.unpack_from(header_bytes, _FIXED.size + 4 * i)[0] for i in range(fixed.frame_count))
    size = fixed.digest.size_bytes
    expected = -(-size // fixed.frame_size) if size else 0
    if fixed.frame_count != expected:
        raise DataLoss(f"{where}: {fixed.frame_count} frames cannot hold {size} bytes")
    header = BlobHeader(fixed.codec, fixed.digest, fixed.frame_size, lengths, fixed.sealed, fixed.version)
    slots: tuple[KeySlot | None, ...] = ()
    if fixed.sealed:
        at = fixed.table_size
        slots = tuple(KeySlot.decode(header_bytes[at + i * SLOT_BYTES : at + (i + 1) * SLOT_BYTES])
                      for i in range(SLOT_COUNT))
    return header, slots
