#!/usr/bin/env python
"""C-STORE ingest over one DICOM association: pacsvault beside Orthanc, same corpus, same sender, same run.

    .venv/bin/python bench/dimse.py [--quick] [--instances N] [--work-dir DIR] [--json-out FILE] [--keep]

The sender is dcmtk's storescu, one association for the whole corpus
(bench/corpus_cache.py, 2,000 instances by default), each file proposed in
its own transfer syntax (pacsvault.client.dcmtk_profile), so neither
receiver transcodes and storescu waits for each C-STORE response before the
next request, as modalities do. pacsvaultd runs on its defaults (one worker
per core; one association lands on one worker). Orthanc (Debian package,
our own process, loopback only through orthanc_peer's shim) runs its C-STORE
SCP with the side-by-side's settings (SyncStorageArea true: each file
fsynced; its SQLite index is not fsynced per instance). Every instance
must be stored on both (checked by gRPC Find and Orthanc's /statistics),
or the run fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

import orthanc_peer
from corpus_cache import Item
from daemon_proc import running_daemon
from ingest_retrieve import Params, log, prepare_corpus
from phases import tree_cpu_seconds
from pacsvault.client import PacsvaultClient, dcmtk_profile
from report import Comparison, Figure, machine_info, render_comparison, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
MB = 1e6


@dataclass
class Run:
    wall_s: float
    server_cpu_s: float
    storescu_cpu_s: float
    stored: int


def parse_args(argv: list[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 instances (a few seconds each side)")
    parser.add_argument("--instances", type=int, help="corpus size, rounded up to whole patients (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", help="where both systems write (default: system temp dir)")
    parser.add_argument("--json-out", type=Path, help="default bench/results/dimse[_quick].json")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    a = parser.parse_args(argv)
    json_out = a.json_out or BENCH_DIR / "results" / ("dimse_quick.json" if a.quick else "dimse.json")
    return Params(instances=a.instances or (200 if a.quick else 2000), parallel=1, retrieve_samples=0,
                  find_queries=0, studies=0, seed=a.seed, quick=a.quick, work_dir=a.work_dir, json_out=json_out,
                  keep=a.keep)


def storescu(port: int, called_ae: str, profile: Path, files: Path, server: psutil.Process) -> tuple[float, float, float]:
    """One association, every file: (wall s, server CPU s, storescu CPU s); fails on any refused file."""
    argv = ["storescu", "--config-file", str(profile), dcmtk_profile.PROFILE, "-aet", "BENCH", "-aec", called_ae,
            "+sd", "+r", "127.0.0.1", str(port), str(files)]
    cpu = tree_cpu_seconds(server)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    sender_cpu = 0.0
    while proc.poll() is None:
        try:
            times = watched.cpu_times()
            sender_cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - started
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"storescu to {called_ae} failed ({proc.returncode}): {err[-2000:]}")
    return wall, tree_cpu_seconds(server) - cpu, sender_cpu


def run_pacsvault(work: Path, profile: Path, files: Path, n: int) -> Run:
    with running_daemon(work / "pacsvault") as daemon:
        _settle()
        log(f"pacsvaultd pid {daemon.proc.pid}, DICOM port {daemon.dicom_port}: storescu, one association")
        wall, server_cpu, sender_cpu = storescu(daemon.dicom_port, "PACSVAULT", profile, files,
                                                psutil.Process(daemon.proc.pid))
        with PacsvaultClient(daemon.target) as client:
            stored = sum(1 for _ in client.find("instance"))
    shutil.rmtree(work / "pacsvault", ignore_errors=True)  # same free space and cache pressure for Orthanc
    return Run(wall, server_cpu, sender_cpu, stored)


def run_orthanc(work: Path, version: str, profile: Path, files: Path) -> tuple[Run, dict]:
    port = orthanc_peer.free_port()
    with orthanc_peer.running_orthanc(work / "orthanc", version, dicom_port=port) as orthanc:
        pool = orthanc_peer.HttpPool(orthanc.port)
        try:
            _settle()
            log(f"Orthanc {version} pid {orthanc.proc.pid}, DICOM port {port}: storescu, one association")
            wall, server_cpu, sender_cpu = storescu(port, "ORTHANC", profile, files, psutil.Process(orthanc.proc.pid))
            stats = pool.json("GET", "/statistics")
        finally:
            pool.close()
    info = {"version": version, "config": orthanc.config, "notes": orthanc.notes}
    return Run(wall, server_cpu, sender_cpu, int(stats["CountInstances"])), info  # type: ignore[index]


def _settle() -> None:
    os.sync()  # the previous phase's dirty pages are not the next one's cost
    time.sleep(1.0)


def figures_of(name: str, run: Run, n: int, total: int) -> list[Figure]:
    return [Figure(name, "C-STORE instances/s, one association", n / run.wall_s, "inst/s"),
            Figure(name, "MB/s (original bytes)", total / MB / run.wall_s, "MB/s"),
            Figure(name, "per instance, wall", run.wall_s / n * 1000, "ms", higher_is_better=False),
            Figure(name, "server CPU per instance", run.server_cpu_s / n * 1000, "ms", higher_is_better=False),
            Figure(name, "storescu CPU per instance", run.storescu_cpu_s / n * 1000, "ms", higher_is_better=False)]


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    warnings.simplefilter("ignore")
    if not shutil.which("storescu"):
        raise SystemExit("storescu not found: apt-get install -y dcmtk")
    version, notes = orthanc_peer.ensure_installed(log)
    items, corpus_stats = prepare_corpus(params)
    work = Path(tempfile.mkdtemp(prefix="pacsvault-dimse-", dir=params.work_dir))
    log(f"work dir {work}")
    problems: list[str] = []
    try:
        files, profile = _sender_files(items, work)
        n, total = len(items), sum(i.size for i in items)
        pv = run_pacsvault(work, profile, files, n)
        orth, orthanc_info = run_orthanc(work, version, profile, files)
        machine = machine_info(work)
    finally:
        if not params.keep:
            shutil.rmtree(work, ignore_errors=True)
    for name, run in (("pacsvault", pv), ("Orthanc", orth)):
        if run.stored != n:
            problems.append(f"{name} holds {run.stored} instances after storing {n}")
    figures = figures_of("pacsvault", pv, n, total) + figures_of("Orthanc", orth, n, total)
    rows = [Comparison("C-STORE ingest", "instances/s over one association (storescu)", n / pv.wall_s,
                       n / orth.wall_s, "inst/s", target=">= 1"),
            Comparison("C-STORE ingest", "server CPU per instance", pv.server_cpu_s / n * 1000,
                       orth.server_cpu_s / n * 1000, "ms", higher_is_better=False)]
    print(render_table(figures))
    print()
    print(render_comparison(rows))
    for note in notes + orthanc_info["notes"]:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    record = {"params": {**asdict(params), "json_out": str(params.json_out)}, "machine": machine,
              "corpus": corpus_stats, "orthanc": orthanc_info, "raw": {"pacsvault": asdict(pv), "orthanc": asdict(orth)},
              "comparison": [{**asdict(r), "ratio": r.ratio, "verdict": r.verdict} for r in rows],
              "problems": problems}
    write_json(params.json_out, record, figures)
    log(f"wrote {params.json_out}")
    return 1 if problems else 0


def _sender_files(items: list[Item], work: Path) -> tuple[Path, Path]:
    """The corpus as one folder storescu walks (hard links, no copies) and its one-association profile."""
    files = work / "send"
    for i, item in enumerate(items):
        target = files / f"{i // 1000:03d}" / f"{i:06d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(item.path, target)
        except OSError:
            shutil.copyfile(item.path, target)
    profile = work / "storescu.cfg"
    profile.write_text(dcmtk_profile.profile(dcmtk_profile.kinds(Path(i.path) for i in items)))
    return files, profile


if __name__ == "__main__":
    sys.exit(main())
