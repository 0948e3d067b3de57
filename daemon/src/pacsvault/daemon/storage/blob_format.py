"""The self-describing, versioned layout of a blob at rest.

Everything needed to read a blob, and to rebuild the index from the blobs
alone, is in its header::

    offset size  field
    0      4     magic b"PVBL"
    4      1     format version (1)
    5      1     codec (0 identity, 1 zstd frames)
    6      1     digest function (pacsvault.v1.DigestFunction)
    7      1     reserved, 0
    8      32    digest of the original bytes
    40     8     original length (u64 LE)
    48     4     frame size: original bytes per frame, the last may be shorter
    52     4     frame count
    56     4*n   stored length of each frame
    56+4n  4     CRC-32 of everything above, so a damaged header is detected
    ...          frames, back to back

Frames are independent zstd frames, each with its own content checksum, so a
ranged read decompresses only the frames it needs and a flipped bit is caught
before any byte of that frame leaves the appliance.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from pacsvault.daemon.digest import DIGEST_LENGTH, Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss

MAGIC = b"PVBL"
FORMAT_VERSION = 1
_FIXED = struct.Struct(f"<4sBBBB{DIGEST_LENGTH}sQII")
_U32 = struct.Struct("<I")
MAX_FRAMES = 1 << 24


class Codec(enum.IntEnum):
    IDENTITY = 0
    ZSTD_FRAMES = 1


@dataclass(frozen=True, slots=True)
class BlobHeader:
    codec: Codec
    digest: Digest
    frame_size: int
    frame_lengths: tuple[int, ...]

    @property
    def encoded_size(self) -> int:
        return _FIXED.size + 4 * len(self.frame_lengths) + 4

    def frame_offsets(self) -> list[int]:
        """Offset of each frame in the stored blob."""
        offsets, at = [], self.encoded_size
        for length in self.frame_lengths:
            offsets.append(at)
            at += length
        return offsets

    def encode(self) -> bytes:
        d = self.digest
        fixed = _FIXED.pack(
            MAGIC, FORMAT_VERSION, self.codec, d.function, 0, d.hash,
            d.size_bytes, self.frame_size, len(self.frame_lengths),
        )
        table = b"".join(_U32.pack(n) for n in self.frame_lengths)
        return fixed + table + _U32.pack(zlib.crc32(fixed + table))


def fixed_header_size() -> int:
    return _FIXED.size


def decode_fixed(prefix: bytes, where: str) -> tuple[Codec, Digest, int, int]:
    """Parses the fixed part; returns codec, digest, frame size, frame count."""
    if len(prefix) < _FIXED.size:
        raise DataLoss(f"{where}: blob shorter than its header ({len(prefix)} bytes)")
    magic, version, codec, function, _, raw, size, frame_size, count = _FIXED.unpack_from(prefix)
    if magic != MAGIC:
        raise DataLoss(f"{where}: not a pacsvault blob (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise DataLoss(f"{where}: blob format version {version} is not readable by this version")
    try:
        digest = Digest(DigestFunction(function), raw, size)
        codec_value = Codec(codec)
    except ValueError as exc:
        raise DataLoss(f"{where}: damaged blob header ({exc})") from exc
    if count > MAX_FRAMES or frame_size == 0:
        raise DataLoss(f"{where}: damaged blob header (frame count {count}, frame size {frame_size})")
    return codec_value, digest, frame_size, count


def decode(header_bytes: bytes, where: str) -> BlobHeader:
    """Parses a full header (fixed part, frame table and CRC) and checks the CRC."""
    codec, digest, frame_size, count = decode_fixed(header_bytes, where)
    end = _FIXED.size + 4 * count
    if len(header_bytes) < end + 4:
        raise DataLoss(f"{where}: blob header truncated")
    (crc,) = _U32.unpack_from(header_bytes, end)
    if zlib.crc32(header_bytes[:end]) != crc:
        raise DataLoss(f"{where}: blob header checksum mismatch")
    lengths = tuple(_U32.unpack_from(header_bytes, _FIXED.size + 4 * i)[0] for i in range(count))
    expected = -(-digest.size_bytes // frame_size) if digest.size_bytes else 0
    if count != expected:
        raise DataLoss(f"{where}: {count} frames cannot hold {digest.size_bytes} bytes")
    return BlobHeader(codec, digest, frame_size, lengths)
