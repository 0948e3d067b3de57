"""The self-describing, versioned layout of one erasure-coded shard.

A shard is everything needed to check it alone, and to know which blob and
which code it belongs to, followed by the pyeclib fragment::

    offset  size  field
    0       4     magic b"PVSH"
    4       1     format version (1)
    5       1     digest function of the blob (pacsvault.v1.DigestFunction)
    6       1     k, data shards
    7       1     m, parity shards
    8       1     index of this shard, 0 .. k+m-1
    9       1     length S of the scheme name
    10      1     length L of the library version string
    11      1     reserved, 0
    12      32    digest of the whole blob
    44      8     length of the whole blob (u64 LE)
    52      8     payload length (u64 LE)
    60      32    BLAKE3-256 of the payload
    92      S     scheme name, ASCII (e.g. "isa_l_rs_cauchy")
    92+S    L     library version, ASCII (e.g. "pyeclib 1.8.0; liberasurecode 1.8.0")
    92+S+L  4     CRC-32 of everything above, so a damaged header is detected
    ...           payload: the pyeclib fragment, its own small header included

The payload digest is always BLAKE3, whatever the blob's digest function:
it is our integrity check, because pyeclib's own checksums miss flipped bits.
"""

from __future__ import annotations

import collections
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import blake3

from pacsvault.daemon.digest import DIGEST_LENGTH, Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss

MAGIC = b"PVSH"
FORMAT_VERSION = 1
MAX_SHARDS = 32
_FIXED = struct.Struct(f"<4sBBBBBBBB{DIGEST_LENGTH}sQQ32s")
_CRC = struct.Struct("<I")
# Enough to hold any header: the fixed part, two strings of at most 255 bytes, the CRC.
MAX_HEADER_SIZE = _FIXED.size + 255 + 255 + _CRC.size


@dataclass(frozen=True, slots=True)
class ShardHeader:
    """What a shard says about itself; ``encode`` and ``parse`` are inverses."""

    scheme: str
    k: int
    m: int
    library_version: str
    digest: Digest
    index: int
    payload_length: int
    payload_blake3: bytes

    @property
    def encoded_size(self) -> int:
        return _FIXED.size + len(self.scheme) + len(self.library_version) + _CRC.size

    @property
    def code(self) -> tuple[Digest, int, int, str]:
        """The identity every shard of one blob must share."""
        return (self.digest, self.k, self.m, self.scheme)

    def encode(self) -> bytes:
        scheme = self.scheme.encode("ascii")
        version = self.library_version.encode("ascii")
        d = self.digest
        fixed = _FIXED.pack(
            MAGIC, FORMAT_VERSION, d.function, self.k, self.m, self.index, len(scheme), len(version), 0,
            d.hash, d.size_bytes, self.payload_length, self.payload_blake3,
        )
        body = fixed + scheme + version
        return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True, slots=True)
class Shard:
    """One encoded shard: its parsed header and its full bytes (header + payload)."""

    header: ShardHeader
    raw: bytes

    @property
    def index(self) -> int:
        return self.header.index

    @property
    def payload(self) -> memoryview:
        return memoryview(self.raw)[self.header.encoded_size :]


def payload_digest(payload: bytes | memoryview) -> bytes:
    """BLAKE3-256 of a shard payload."""
    return blake3.blake3(payload).digest()


def build(header: ShardHeader, payload: bytes) -> Shard:
    """Joins a header and its payload into one shard."""
    return Shard(header, header.encode() + payload)


def parse_header(raw: bytes | memoryview, where: str = "shard") -> ShardHeader:
    """Parses and CRC-checks a shard header; the payload is not looked at.

    Raises:
        DataLoss: the bytes do not start with an intact, readable header.
    """
    if len(raw) < _FIXED.size:
        raise DataLoss(f"{where}: shorter than a shard header ({len(raw)} bytes)")
    (magic, version, function, k, m, index, s_len, v_len, _, digest_hash, size, payload_length,
     payload_hash) = _FIXED.unpack_from(raw)
    if magic != MAGIC:
        raise DataLoss(f"{where}: not a pacsvault shard (magic {bytes(magic)!r})")
    if version != FORMAT_VERSION:
        raise DataLoss(f"{where}: shard format version {version} is not readable by this version")
    end = _FIXED.size + s_len + v_len
    if len(raw) < end + _CRC.size:
        raise DataLoss(f"{where}: shard header truncated")
    (crc,) = _CRC.unpack_from(raw, end)
    if zlib.crc32(raw[:end]) != crc:
        raise DataLoss(f"{where}: shard header checksum mismatch")
    try:
        # A CRC-valid header can still come from a newer writer with values we do not know.
        digest = Digest(DigestFunction(function), bytes(digest_hash), size)
        scheme = bytes(raw[_FIXED.size : _FIXED.size + s_len]).decode("ascii")
        library_version = bytes(raw[_FIXED.size + s_len : end]).decode("ascii")
    except ValueError as exc:
        raise DataLoss(f"{where}: unreadable shard header ({exc})") from exc
    if not (k >= 1 and m >= 1 and k + m <= MAX_SHARDS and index < k + m):
        raise DataLoss(f"{where}: shard header has impossible k={k} m={m} index={index}")
    return ShardHeader(scheme, k, m, library_version, digest, index, payload_length, bytes(payload_hash))


def parse(raw: bytes | memoryview, where: str = "shard") -> Shard:
    """Parses a whole shard and verifies its payload against the header's BLAKE3.

    Raises:
        DataLoss: the header is damaged, the payload is truncated or longer
            than declared, or its BLAKE3 does not match.
    """
    header = parse_header(raw, where)
    payload = memoryview(raw)[header.encoded_size :]
    if len(payload) != header.payload_length:
        raise DataLoss(f"{where}: payload is {len(payload)} bytes, header says {header.payload_length}")
    if payload_digest(payload) != header.payload_blake3:
        raise DataLoss(f"{where}: payload BLAKE3 mismatch (shard {header.index} of {header.digest})")
    return Shard(header, raw if isinstance(raw, bytes) else bytes(raw))


def consensus(headers: Iterable[ShardHeader]) -> ShardHeader | None:
    """A header carrying the code (digest, k, m, scheme) most shards agree on.

    Used where the expected code is not known in advance (scrub, listing):
    one damaged-but-CRC-valid header cannot outvote the others.
    """
    by_code: dict[tuple[Digest, int, int, str], ShardHeader] = {}
    votes: collections.Counter[tuple[Digest, int, int, str]] = collections.Counter()
    for header in headers:
        by_code.setdefault(header.code, header)
        votes[header.code] += 1
    if not votes:
        return None
    return by_code[votes.most_common(1)[0][0]]
