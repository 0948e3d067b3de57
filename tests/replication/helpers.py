"""Helpers shared by the replication tests: blobs with their digests, bit flips."""

from __future__ import annotations

import random

from pacsvault.daemon.digest import Digest, compute


def blob(size: int, seed: int = 1) -> tuple[Digest, bytes]:
    """Deterministic pseudo-random bytes and their digest."""
    data = random.Random(seed).randbytes(size)
    return compute(data), data


def flip(raw: bytes, position: int, bit: int = 0) -> bytes:
    """``raw`` with one bit inverted."""
    damaged = bytearray(raw)
    damaged[position] ^= 1 << bit
    return bytes(damaged)
