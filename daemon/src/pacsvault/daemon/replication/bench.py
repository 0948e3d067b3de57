"""A micro-benchmark of the erasure codec, for bench/ and closing notes.

Figures are MB/s (10**6 bytes) of blob bytes, one thread. Encode and decode
include our BLAKE3 work (the blob digest check, one hash per shard), since
that is what replication pays; pyeclib alone is faster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pacsvault.daemon.digest import compute
from pacsvault.daemon.replication.codec import DEFAULT_SCHEME, ErasureCodec


def bench_codec(size: int, k: int = 4, m: int = 2, scheme: str = DEFAULT_SCHEME,
                repeat: int = 3) -> dict[str, float | int | str]:
    """Measures encode, decode from the k data shards, and decode with m data shards lost.

    Args:
        size: blob size in bytes (random content: no shortcut for zeros).
        k: data shards.
        m: parity shards.
        scheme: pyeclib scheme.
        repeat: runs of each; the best is kept, as usual for micro-benchmarks.

    Returns:
        size, k, m, scheme, library, encode_mb_s, decode_mb_s (all data
        shards present: the common case) and decode_degraded_mb_s (the first
        min(m, k) data shards lost: parity arithmetic needed).
    """
    codec = ErasureCodec(k, m, scheme)
    data = os.urandom(size)
    digest = compute(data)
    shards = codec.encode(digest, data)
    data_only = [s.raw for s in shards[:k]]
    degraded = [s.raw for s in shards[min(m, k) :]]
    assert codec.decode(digest, degraded) == data  # a benchmark of wrong answers is worthless

    def rate(work: Callable[[], object]) -> float:
        best = min(_timed(work) for _ in range(repeat))
        return round(size / best / 1e6, 1) if best > 0 else float("inf")

    return {
        "size": size, "k": k, "m": m, "scheme": scheme, "library": codec.library_version,
        "encode_mb_s": rate(lambda: codec.encode(digest, data)),
        "decode_mb_s": rate(lambda: codec.decode(digest, data_only)),
        "decode_degraded_mb_s": rate(lambda: codec.decode(digest, degraded)),
    }


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    print(bench_codec(16 << 20))
