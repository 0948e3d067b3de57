#!/usr/bin/env python
"""Integrity benchmark: what the local scrub costs ingest, and how fast an index is rebuilt from its blobs.

    .venv/bin/python bench/integrity.py [--quick] [--instances N] [--rounds R] [--parallel P]
                                        [--rebuild-instances N] [--json-out FILE]

Scrub (issue 15, item 7: scrub at its default rate costs ingest <= 10%, ratio >= 0.90).
Per round, two real daemons, each on a fresh data dir loaded first with the first half of the corpus:
  idle:      the second half is stored with the scrub off ([scrub] enabled = false), the baseline;
  scrubbing: the same, with the scrub at its default [scrub] max_bytes_per_s and interval_s = 1 s,
             so a pass over the loaded blobs runs the whole time the second half is stored.
Rounds alternate the order (idle first, then scrubbing first); the table shows the
medians, the JSON every round. The scrub's progress is sampled during the ingest and
its rate reported, so a figure measured while the scrub sat idle would show (0 MB/s).

Rebuild (item 7: rebuild of a 100k-instance index, with its rate).
--rebuild-instances small instances (pydicom's CT_small.dcm, 39 KB, with new
UIDs: 10 per series, 5 series per study, 2 studies per patient) are stored
through gRPC with --parallel calls in flight, the daemon is stopped (SIGTERM),
then `pacsvaultd --rebuild-index` is timed on its data dir (encryption at
rest on, as by default: every blob is decrypted, decompressed, parsed and
re-indexed). The restarted daemon must then give back a sample of the
instances byte for byte; a wrong answer is the only way this fails (exit 1).
Baseline: the ingest rate of the same instances in the same run.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import corpus_cache
from daemon_proc import daemon_command, running_daemon
from ingest_retrieve import log
from pacsvault.client import PacsvaultClient
from report import Figure, machine_info, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
MB = 1e6
CHUNK = 1000  # instances generated and handed to the pool at once: memory stays bounded at 100k
PER_SERIES, SERIES_PER_STUDY, STUDIES_PER_PATIENT = 10, 5, 2


# -- scrub against ingest ------------------------------------------------------------------


def scrub_config(path: Path, scrubbing: bool) -> Path:
    path.write_text("[scrub]\ninterval_s = 1.0\n" if scrubbing else "[scrub]\nenabled = false\n")
    return path


def store_all(target: str, datas: list[bytes], parallel: int) -> float:
    """Stores every file with ``parallel`` calls in flight; returns wall seconds."""
    with PacsvaultClient(target, timeout=120) as client, ThreadPoolExecutor(parallel) as pool:
        started = time.perf_counter()
        results = list(pool.map(client.store, datas))
        wall = time.perf_counter() - started
    wrong = [r for r in results if r.status != "stored"]
    if wrong:
        raise SystemExit(f"{len(wrong)} of {len(results)} stores not stored, e.g. {wrong[0].status} "
                         f"{wrong[0].code}: {wrong[0].message}")
    return wall


class ScrubWatch:
    """Samples the scrub's progress in the background: bytes verified while ingest ran."""

    def __init__(self, target: str) -> None:
        self._client = PacsvaultClient(target, timeout=10)
        self._stop = threading.Event()
        self.bytes_checked = 0
        self.samples = self.scrubbing = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScrubWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        previous = self._client.scrub_status().pass_bytes_checked
        while not self._stop.wait(0.2):
            status = self._client.scrub_status()
            now = status.pass_bytes_checked
            self.bytes_checked += now if now < previous else now - previous  # a new pass began
            previous = now
            self.samples += 1
            self.scrubbing += status.state == "scrubbing"


def run_ingest(work: Path, first: list[bytes], second: list[bytes], parallel: int,
               scrubbing: bool) -> tuple[float, float, float]:
    """(ingest wall s of the second half, scrub MB/s meanwhile, share of samples the scrub was busy)."""
    name = "scrubbing" if scrubbing else "idle"
    work.mkdir(parents=True, exist_ok=True)
    config = scrub_config(work / f"{name}.toml", scrubbing)
    with running_daemon(work / name, config) as daemon:
        try:
            store_all(daemon.target, first, parallel)
            os.sync()  # the load's writeback is not charged to the measured half
            with ScrubWatch(daemon.target) as watch:
                wall = store_all(daemon.target, second, parallel)
        except SystemExit as exc:
            raise SystemExit(f"{exc} (daemon log: {daemon.log_path})") from None
        busy = watch.scrubbing / watch.samples if watch.samples else 0.0
    shutil.rmtree(work / name, ignore_errors=True)  # kept when something went wrong
    return wall, watch.bytes_checked / MB / wall, busy


# -- index rebuild ----------------------------------------------------------------------------


def small_instances(count: int, seed: int) -> Iterator[bytes]:
    """CT_small.dcm under new identities, one file at a time (cheap: the dataset is re-written, not copied)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = random.Random(seed)
    prefix = f"RB{rng.randrange(10**6):06d}"
    for i in range(count):
        if i % PER_SERIES == 0:
            if i % (PER_SERIES * SERIES_PER_STUDY) == 0:
                if i % (PER_SERIES * SERIES_PER_STUDY * STUDIES_PER_PATIENT) == 0:
                    patient = i // (PER_SERIES * SERIES_PER_STUDY * STUDIES_PER_PATIENT)
                    ds.PatientID, ds.PatientName = f"{prefix}-{patient:07d}", f"Rebuild^{patient}"
                ds.StudyInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i % PER_SERIES + 1
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        yield out.getvalue()


def store_many(target: str, count: int, parallel: int, seed: int, keep_every: int) -> tuple[float, dict[str, bytes]]:
    """Stores ``count`` small instances, at most CHUNK generated at once; returns (wall s, a sample by SOP UID)."""
    sample: dict[str, bytes] = {}
    generated = small_instances(count, seed)
    stored = 0
    with PacsvaultClient(target, timeout=120) as client, ThreadPoolExecutor(parallel) as pool:
        started = time.perf_counter()
        while stored < count:
            chunk = [next(generated) for _ in range(min(CHUNK, count - stored))]
            results = list(pool.map(client.store, chunk))
            bad = [r for r in results if not r.ok]
            if bad:
                raise SystemExit(f"store refused: {bad[0].code}: {bad[0].message}")
            for data, result in zip(chunk[::keep_every], results[::keep_every]):
                sample[result.sop_instance_uid] = data
            stored += len(chunk)
            if stored % 10000 == 0:
                log(f"rebuild: {stored} of {count} stored")
        return time.perf_counter() - started, sample


def run_rebuild(work: Path, count: int, parallel: int) -> tuple[float, float, int, int, list[str]]:
    """(ingest wall s, rebuild wall s, instances rebuilt, bytes read, wrong answers)."""
    log(f"rebuild: storing {count} small instances, {parallel} in flight")
    with running_daemon(work / "rebuild") as daemon:
        ingest_s, sample = store_many(daemon.target, count, parallel, seed=count, keep_every=max(1, count // 200))
    data_dir = work / "rebuild" / "daemon-data"
    log("rebuild: daemon stopped; pacsvaultd --rebuild-index")
    started = time.perf_counter()
    done = subprocess.run([daemon_command(), "--data-dir", str(data_dir), "--rebuild-index", "--log-level", "WARNING"],
                          capture_output=True, text=True)
    rebuild_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"--rebuild-index exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    first = done.stdout.splitlines()[0]
    log(first)
    match = re.search(r"rebuilt: (\d+) instances", first)
    rebuilt = int(match.group(1)) if match else 0
    wrong = [] if rebuilt == count else [f"rebuilt {rebuilt} instances of {count}"]
    bytes_read = sum(p.stat().st_size for p in (data_dir / "tiers").rglob("*") if p.is_file())
    with running_daemon(work / "rebuild") as daemon, PacsvaultClient(daemon.target, timeout=60) as client:
        wrong += [f"{sop}: other bytes after the rebuild" for sop, data in sample.items()
                  if client.get_instance(sop) != data]
    return ingest_s, rebuild_s, rebuilt, bytes_read, wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 corpus instances, one round, a 2,000-instance rebuild")
    parser.add_argument("--instances", type=int, help="corpus instances, half loaded and half measured (default 2000)")
    parser.add_argument("--rounds", type=int, help="idle / scrubbing pairs (default 2)")
    parser.add_argument("--parallel", type=int, default=8, help="store calls in flight (default 8)")
    parser.add_argument("--rebuild-instances", type=int, help="instances in the rebuilt index (default 100000)")
    parser.add_argument("--skip-rebuild", action="store_true")
    parser.add_argument("--work-dir")
    parser.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "integrity.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    count = args.rebuild_instances or (2000 if args.quick else 100000)
    instances = args.instances or (400 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 2)
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(instances, 1))
    datas = [Path(i.path).read_bytes() for i in items]
    first, second = datas[::2], datas[1::2]
    work = Path(tempfile.mkdtemp(prefix="pacsvault-integrity-bench-", dir=args.work_dir))
    runs: list[dict[str, float]] = []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for scrubbing in order:
            log(f"scrub round {r + 1}: {len(first)} instances loaded, then {len(second)} stored, "
                f"scrub {'at its default rate' if scrubbing else 'off'}")
            wall, mb_s, share = run_ingest(work / f"round{r}", first, second, args.parallel, scrubbing)
            runs.append({"round": r, "scrubbing": scrubbing, "wall_s": wall, "scrub_mb_s": mb_s, "busy": share})
    idle = statistics.median(x["wall_s"] for x in runs if not x["scrubbing"])
    busy_wall = statistics.median(x["wall_s"] for x in runs if x["scrubbing"])
    scrub_mb_s = statistics.median(x["scrub_mb_s"] for x in runs if x["scrubbing"])
    busy_share = min(x["busy"] for x in runs if x["scrubbing"])
    second_mb = sum(map(len, second)) / MB
    figures = [
        Figure("scrub", "store, scrub off", len(second) / idle, "inst/s"),
        Figure("scrub", "store, scrub at its default rate", len(second) / busy_wall, "inst/s",
               baseline=len(second) / idle, note="baseline: scrub off; target ratio >= 0.90"),
        Figure("scrub", "store MB/s, scrub at its default rate", second_mb / busy_wall, "MB/s",
               baseline=second_mb / idle, note="baseline: scrub off"),
        Figure("scrub", "scrub verified meanwhile (limit 16 MiB/s)", scrub_mb_s, "MB/s",
               note=f"at rest, as committed (every 128 blobs); scrubbing in >= {busy_share:.0%} of samples"),
    ]
    wrong: list[str] = []
    record: dict[str, object] = {"scrub_runs": runs, "instances": instances, "rounds": rounds}
    if not args.skip_rebuild:
        ingest_s, rebuild_s, rebuilt, bytes_read, wrong = run_rebuild(work, count, args.parallel)
        figures += [
            Figure("rebuild", f"pacsvaultd --rebuild-index, {rebuilt:,} instances", rebuilt / rebuild_s, "inst/s",
                   baseline=count / ingest_s, note=f"baseline: storing them; {rebuild_s:.1f} s in all"),
            Figure("rebuild", "--rebuild-index, blobs read", bytes_read / MB / rebuild_s, "MB/s",
                   note="at rest: decrypt, decompress, parse, re-index"),
        ]
        record.update({"rebuild_instances": count, "rebuild_seconds": rebuild_s, "rebuild_ingest_seconds": ingest_s})
    print(render_table(figures))
    write_json(args.json_out, {"machine": machine_info(work), **record, "wrong": wrong}, figures)
    for problem in wrong[:20]:
        print(f"WRONG: {problem}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
