#!/usr/bin/env python
"""What each zstd level costs and saves on the benchmark corpus: the measurement behind storage.compression_level.

    .venv/bin/python bench/compression.py [--quick] [--instances N] [--json-out FILE]

For each level (and for storing frames as they are), every instance of the
corpus is compressed in independent 1 MiB frames with a checksum, as the
daemon does, on one thread; CPU time (process time, so other load on the
machine barely moves it) per instance, throughput and the ratio of original
to compressed bytes are printed. Decompression cost is measured too: every
read pays it.

The corpus copies differ from their sources only in their identities, so
ratios here are a little better than on real traffic; the *difference*
between levels is what the choice rests on (bench/README.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import zstandard

import corpus_cache
from report import Figure, machine_info, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
FRAME_BYTES = 1024 * 1024
LEVELS = (1, 3, 6)


def frames(data: bytes) -> list[memoryview]:
    view = memoryview(data)
    return [view[at : at + FRAME_BYTES] for at in range(0, len(data), FRAME_BYTES)]


def measure(datas: list[bytes], level: int) -> dict[str, float]:
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    decompressor = zstandard.ZstdDecompressor()
    started = time.process_time()
    compressed = [[compressor.compress(f) for f in frames(d)] for d in datas]
    compress_s = time.process_time() - started
    started = time.process_time()
    for parts in compressed:
        for part in parts:
            decompressor.decompress(part)
    decompress_s = time.process_time() - started
    n, total = len(datas), sum(map(len, datas))
    stored = sum(len(p) for parts in compressed for p in parts)
    return {"level": level, "compress_ms": compress_s / n * 1000, "decompress_ms": decompress_s / n * 1000,
            "compress_mb_s": total / 1e6 / compress_s, "ratio": total / stored}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 instances")
    parser.add_argument("--instances", type=int, help="corpus size (default 2000, the side-by-side corpus)")
    parser.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "compression.json")
    args = parser.parse_args(argv)
    n = args.instances or (200 if args.quick else 2000)
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(n, 1))
    datas = [Path(i.path).read_bytes() for i in items]
    rows = [measure(datas, level) for level in LEVELS]
    figures = []
    for row in rows:
        name = f"zstd level {row['level']}"
        figures += [
            Figure("compression", f"{name}: compress CPU per instance", row["compress_ms"], "ms"),
            Figure("compression", f"{name}: decompress CPU per instance", row["decompress_ms"], "ms"),
            Figure("compression", f"{name}: compress throughput, one core", row["compress_mb_s"], "MB/s"),
            Figure("compression", f"{name}: ratio (original / stored)", row["ratio"], "x"),
        ]
    print(render_table(figures))
    write_json(args.json_out, {"instances": len(datas), "original_bytes": sum(map(len, datas)), "levels": rows,
                               "machine": machine_info(BENCH_DIR)}, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
