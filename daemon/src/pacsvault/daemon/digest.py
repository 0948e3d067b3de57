"""Content digests: the identity of every blob."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import blake3

from pacsvault.daemon.errors import InvalidInput, shown


class DigestFunction(enum.IntEnum):
    """Values match pacsvault.v1.DigestFunction and are written into blob headers."""

    BLAKE3 = 1
    SHA256 = 2


DIGEST_LENGTH = 32


@dataclass(frozen=True, slots=True)
class Digest:
    """A hash of the exact bytes received, with their length.

    As a blob's address on an encrypting appliance the BLAKE3 is keyed with
    the appliance's address key (see ``address_of``): someone holding the
    disks but not the keyring cannot hash a known file and look for it.
    """

    function: DigestFunction
    hash: bytes
    size_bytes: int

    @property
    def hex(self) -> str:
        return self.hash.hex()

    def __str__(self) -> str:
        return f"{self.function.name.lower()}:{self.hex}/{self.size_bytes}"


def compute(data: bytes | bytearray | memoryview) -> Digest:
    """BLAKE3-256 of ``data``; large inputs hash on several threads, GIL released."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if len(data) > (1 << 22) else 1)
    hasher.update(data)
    return Digest(DigestFunction.BLAKE3, hasher.digest(), len(data))


def address_of(data: bytes | bytearray | memoryview, key: bytes | None) -> Digest:
    """A blob's address: BLAKE3, keyed with ``key`` when the appliance encrypts."""
    if key is None:
        return compute(data)
    hasher = blake3.blake3(key=key, max_threads=blake3.blake3.AUTO if len(data) > (1 << 22) else 1)
    hasher.update(data)
    return Digest(DigestFunction.BLAKE3, hasher.digest(), len(data))


def parse_hex(function: DigestFunction, hex_hash: str, size_bytes: int) -> Digest:
    """Builds a Digest from its API form, naming what is wrong when it is not one."""
    if function != DigestFunction.BLAKE3:
        raise InvalidInput(f"digest function {function!r} is not used by this appliance (blake3 is)")
    try:
        raw = bytes.fromhex(hex_hash)
    except ValueError as exc:
        raise InvalidInput(f"digest hash {shown(hex_hash)} is not hexadecimal") from exc
    if len(raw) != DIGEST_LENGTH:
        raise InvalidInput(f"digest hash must be {DIGEST_LENGTH} bytes, got {len(raw)}")
    if size_bytes < 0:
        raise InvalidInput("digest size_bytes must not be negative")
    return Digest(function, raw, size_bytes)
