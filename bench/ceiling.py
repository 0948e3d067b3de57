"""The machine ceiling: the work ingest cannot avoid, with nothing else around it.

No gRPC, no index, no daemon: per file, parse the header, digest, compress in
independent frames and write durably, on a thread pool as wide as the
benchmark's client parallelism (pydicom holds the GIL; BLAKE3, zstd and file
I/O release it). Ingest through the daemon is reported as a fraction of this.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pydicom
import zstandard

# The daemon's defaults (storage.compression_level, storage.frame_size_bytes).
ZSTD_LEVEL = 1
FRAME_BYTES = 1024 * 1024
# Above this the daemon hashes on several threads (pacsvault.daemon.digest).
MULTITHREAD_DIGEST_BYTES = 1 << 22
STAGES = ("parse", "digest", "compress", "write+fsync")


@dataclass
class CeilingRun:
    wall_s: float
    # Seconds per stage summed over threads: where the time goes, not wall time.
    stage_s: dict[str, float]
    stored_bytes: int
    parallel: int
    # Per corpus index: blob path and frame lengths, for the local read baseline.
    blobs: dict[int, tuple[Path, list[int]]] = field(default_factory=dict)


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; one per thread, as the daemon does.
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    return _local.compressor


def ingest_ceiling(datas: Sequence[bytes], out_dir: Path, parallel: int) -> CeilingRun:
    """Parse + digest + compress + durable write of every file, ``parallel`` at a time."""
    (out_dir / "tmp").mkdir(parents=True)
    (out_dir / "blobs").mkdir()
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda i: _ingest_one(datas[i], out_dir), range(len(datas))))
    wall = time.perf_counter() - started
    stage_s = {name: sum(r[0][k] for r in results) for k, name in enumerate(STAGES)}
    blobs = {i: (r[1], r[2]) for i, r in enumerate(results)}
    return CeilingRun(wall, stage_s, sum(sum(r[2]) for r in results), parallel, blobs)


def _ingest_one(data: bytes, out_dir: Path) -> tuple[list[float], Path, list[int]]:
    t0 = time.perf_counter()
    pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    t1 = time.perf_counter()
    threads = blake3.blake3.AUTO if len(data) > MULTITHREAD_DIGEST_BYTES else 1
    digest = blake3.blake3(data, max_threads=threads).hexdigest()
    t2 = time.perf_counter()
    view, compressor = memoryview(data), _compressor()
    frames = [compressor.compress(view[at : at + FRAME_BYTES]) for at in range(0, len(data), FRAME_BYTES)]
    t3 = time.perf_counter()
    final = out_dir / "blobs" / digest
    _write_durably(out_dir / "tmp" / f"{digest}.tmp", final, frames)
    t4 = time.perf_counter()
    return [t1 - t0, t2 - t1, t3 - t2, t4 - t3], final, [len(f) for f in frames]


def _write_durably(tmp: Path, final: Path, parts: list[bytes]) -> None:
    # The same sequence as the daemon's local layer, minus its directory fan-out:
    # data fsynced before it is named, atomic rename, then the name fsynced.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(b"".join(parts))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_only(datas: Sequence[bytes], out_dir: Path, parallel: int) -> float:
    """Wall seconds to write and fsync the raw bytes: the disk's own floor."""
    out_dir.mkdir(parents=True)

    def one(i: int) -> None:
        fd = os.open(out_dir / f"{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(datas[i])
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    return _timed_pool(one, len(datas), parallel)


def _timed_pool(fn: Callable[[int], None], n: int, parallel: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(fn, range(n)))
    return time.perf_counter() - started


def read_one(path: Path, frame_lengths: list[int]) -> bytes:
    """What GetInstance must do at least: read the blob, decompress its frames, verify."""
    decompressor = zstandard.ZstdDecompressor()
    fd = os.open(path, os.O_RDONLY)
    try:
        stored = os.pread(fd, sum(frame_lengths), 0)
    finally:
        os.close(fd)
    parts, at = [], 0
    for length in frame_lengths:
        parts.append(decompressor.decompress(stored[at : at + length]))
        at += length
    data = b"".join(parts)
    blake3.blake3(data).digest()
    return data
