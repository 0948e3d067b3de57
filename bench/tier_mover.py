#!/usr/bin/env python
"""Tier mover benchmark: what moving blobs between tiers costs ingest, and how fast it moves.

    .venv/bin/python bench/tier_mover.py [--quick] [--parallel P] [--json-out FILE]

Three real daemons, each loaded with the first half of the corpus:
  idle:     the second half is stored with the mover idle (the baseline);
  moving:   the hot volume is drained, so the mover copies the first half at
            its configured rate while the second half is stored;
  flat-out: the mover drains the hot volume with no rate limit and nothing
            else running (its ceiling).
The issue's target: the mover costs ingest no more than 25% (ratio >= 0.75).
Both tiers sit on the work dir's disk; a drain moves between volumes of one
filesystem as demotion between two disks would, copy + verify + fsync.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import corpus_cache
from daemon_proc import running_daemon
from pacsvault.client import PacsvaultClient
from report import Figure, machine_info, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
MB = 1e6
DEFAULT_RATE = 100 * 1024 * 1024  # tiering.mover_max_bytes_per_s default


def write_config(path: Path, rate: int, interval: float) -> Path:
    path.write_text(
        f"[tiering]\nmover_interval_s = {interval}\nmover_max_bytes_per_s = {rate}\n"
        '[[tiers]]\nname = "hot"\nvolumes = ["tiers/hot"]\n'
        '[[tiers]]\nname = "capacity"\nvolumes = ["tiers/capacity"]\n'
    )
    return path


def store_all(target: str, datas: list[bytes], parallel: int) -> float:
    """Stores every file with ``parallel`` clients; returns wall seconds."""
    with PacsvaultClient(target) as client, ThreadPoolExecutor(parallel) as pool:
        started = time.perf_counter()
        statuses = list(pool.map(lambda d: client.store(d).status, datas))
        wall = time.perf_counter() - started
    if set(statuses) != {"stored"}:
        raise SystemExit(f"unexpected store results: {sorted(set(statuses))}")
    return wall


def volume(client: PacsvaultClient, tier: str) -> object:
    return next(v for v in client.list_volumes().volumes if v.tier == tier)


def wait_drained(client: PacsvaultClient, timeout: float = 600.0) -> float:
    started = time.perf_counter()
    while volume(client, "hot").state != "drained":
        if time.perf_counter() - started > timeout:
            raise SystemExit("the hot volume did not drain in time")
        time.sleep(0.02)
    return time.perf_counter() - started


def run_idle(work: Path, first: list[bytes], second: list[bytes], parallel: int) -> float:
    config = write_config(work / "idle.toml", DEFAULT_RATE, 0.2)
    with running_daemon(work / "idle", config) as daemon:
        store_all(daemon.target, first, parallel)
        return store_all(daemon.target, second, parallel)


def run_moving(work: Path, first: list[bytes], second: list[bytes], parallel: int) -> tuple[float, float, int]:
    """(ingest wall s, seconds until drained, bytes moved) with the mover busy during ingest."""
    config = write_config(work / "moving.toml", DEFAULT_RATE, 0.2)
    with running_daemon(work / "moving", config) as daemon, PacsvaultClient(daemon.target) as client:
        store_all(daemon.target, first, parallel)
        moved = volume(client, "hot").stored_bytes
        started = time.perf_counter()
        client.drain_volume(volume(client, "hot").path)
        wall = store_all(daemon.target, second, parallel)
        drained_after = time.perf_counter() - started + wait_drained(client)
        return wall, drained_after, moved


def run_flat_out(work: Path, first: list[bytes], parallel: int) -> tuple[float, int]:
    config = write_config(work / "flat.toml", 10 * 1024**3, 0.05)
    with running_daemon(work / "flat", config) as daemon, PacsvaultClient(daemon.target) as client:
        store_all(daemon.target, first, parallel)
        moved = volume(client, "hot").stored_bytes
        client.drain_volume(volume(client, "hot").path)
        return wait_drained(client), moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--work-dir")
    parser.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "tier_mover.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(200 if args.quick else 1000, 1))
    datas = [Path(i.path).read_bytes() for i in items]
    first, second = datas[::2], datas[1::2]
    work = Path(tempfile.mkdtemp(prefix="pacsvault-mover-bench-", dir=args.work_dir))
    idle = run_idle(work, first, second, args.parallel)
    moving, drained_s, moved = run_moving(work, first, second, args.parallel)
    flat_s, flat_moved = run_flat_out(work, first, args.parallel)
    second_mb = sum(map(len, second)) / MB
    figures = [
        Figure("ingest", "store, mover idle", len(second) / idle, "inst/s"),
        Figure("ingest", "store, mover draining at its rate limit", len(second) / moving, "inst/s",
               baseline=len(second) / idle, note="baseline: mover idle; target ratio >= 0.75"),
        Figure("ingest", "store MB/s, mover idle / moving", second_mb / idle, "MB/s"),
        Figure("mover", "mover while ingest runs (limit 100 MiB/s)", moved / MB / drained_s, "MB/s at rest"),
        Figure("mover", "mover alone, no rate limit", flat_moved / MB / flat_s, "MB/s at rest",
               note="copy + verify + fsync + index switch per blob"),
    ]
    print(render_table(figures))
    write_json(args.json_out, {"machine": machine_info(work), "moved_bytes": moved}, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
