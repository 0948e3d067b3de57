"""Ways a blob file rots, for the scrub and soak tests: each changes the file in place."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def bit_flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def overwrite_4k(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    at = max(0, len(raw) // 2 - 2048)
    raw[at : at + 4096] = os.urandom(min(4096, len(raw) - at))
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def zero_length(path: Path) -> None:
    os.truncate(path, 0)


KINDS: dict[str, Callable[[Path], None]] = {
    "bit-flip": bit_flip, "4k-overwrite": overwrite_4k, "truncation": truncate, "zero-length": zero_length,
}
