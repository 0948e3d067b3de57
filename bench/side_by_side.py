#!/usr/bin/env python
"""pacsvault beside Orthanc, same corpus, same client parallelism, same disk, same run.

    .venv/bin/python bench/side_by_side.py [--quick] [--instances N] [--parallel P] [--json-out FILE]

Runs, in order: the machine ceiling (ceiling.py); pacsvaultd on a fresh data
dir through the phases ingest_retrieve.py measures (phases.py), twice: with
its default serving processes (one per core) and with one; then Orthanc
from the Debian package (installed if missing, our own process on loopback,
see orthanc_peer.py) loaded through POST /instances and queried on the same
samples (orthanc_phases.py). Prints the pacsvault-vs-ceiling table, then the
side-by-side with the ratio pacsvault / Orthanc for every figure and the
process-model issue's targets, for both pacsvault runs. Fails (exit 1) only
on wrong answers from either system.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import psutil

import ceiling
import orthanc_phases
import orthanc_peer
from corpus_cache import SIZE_CLASSES
from daemon_proc import running_daemon
from ingest_retrieve import Params, log, prepare_corpus
from pacsvault.client import PacsvaultClient
from phases import at_rest_figure, find_phase, ingest_phase, retrieve_phase, stop_figures
from report import Comparison, Figure, machine_info, render_comparison, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
MB = 1e6
DAEMON_CONFIG: Path | None = None  # --daemon-config


def parse_args(argv: list[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 instances, 100 samples, 5 studies (about a minute)")
    parser.add_argument("--instances", type=int,
                        help="corpus size, rounded up to whole patients of 40 (default 2000: ~620 MB)")
    parser.add_argument("--parallel", type=int, default=8, help="concurrent stores on both systems (default 8)")
    parser.add_argument("--samples", type=int, help="retrieve and find samples each (default 300, quick 100)")
    parser.add_argument("--studies", type=int, help="studies downloaded whole (default 10, quick 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", help="where both systems and the ceiling write (default: system temp dir)")
    parser.add_argument("--json-out", type=Path, help="default bench/results/side_by_side[_quick].json")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--daemon-config", type=Path,
                        help="TOML passed to pacsvaultd --config (default: its embedded defaults, as shipped)")
    a = parser.parse_args(argv)
    global DAEMON_CONFIG
    DAEMON_CONFIG = a.daemon_config
    samples = a.samples or (100 if a.quick else 300)
    json_out = a.json_out or BENCH_DIR / "results" / ("side_by_side_quick.json" if a.quick else "side_by_side.json")
    return Params(
        instances=a.instances or (200 if a.quick else 2000), parallel=a.parallel, retrieve_samples=samples,
        find_queries=samples, studies=a.studies or (5 if a.quick else 10), seed=a.seed, quick=a.quick,
        work_dir=a.work_dir, json_out=json_out, keep=a.keep,
    )


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    warnings.simplefilter("ignore")
    version, notes = orthanc_peer.ensure_installed(log)
    items, corpus_stats = prepare_corpus(params)
    datas = [Path(i.path).read_bytes() for i in items]
    work = Path(tempfile.mkdtemp(prefix="pacsvault-vs-orthanc-", dir=params.work_dir))
    log(f"work dir {work}")
    try:
        figures, runs, orth, problems, orthanc_info = run_all(params, items, datas, work, version)
        machine = machine_info(work)
    finally:
        if not params.keep:
            shutil.rmtree(work, ignore_errors=True)
    n, total = len(datas), sum(map(len, datas))
    pv, one = runs["default"], runs["workers=1"]
    rows = compare(pv, orth, n, total) + compare(one, orth, n, total, label="workers=1") + compare_workers(pv, one, n)
    print(render_table(figures))
    print()
    print(render_comparison(rows))
    for note in notes + orthanc_info["notes"]:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    record = {"params": {**asdict(params), "json_out": str(params.json_out),
                         "daemon_config": DAEMON_CONFIG.read_text() if DAEMON_CONFIG else None}, "machine": machine,
              "corpus": corpus_stats, "orthanc": orthanc_info,
              "raw": {"pacsvault": pv, "pacsvault_workers_1": one, "orthanc": orth},
              "comparison": [{**asdict(r), "ratio": r.ratio, "verdict": r.verdict} for r in rows],
              "problems": problems}
    write_json(params.json_out, record, figures)
    log(f"wrote {params.json_out}")
    return 1 if problems else 0


def run_all(params: Params, items, datas, work: Path, version: str):
    log(f"ceiling: parse + digest + zstd + durable write, {params.parallel} threads, no daemon")
    ceiling_run = ceiling.ingest_ceiling(datas, work / "ceiling", params.parallel)
    write_wall = ceiling.write_only(datas, work / "write-only", params.parallel)
    shutil.rmtree(work / "write-only")
    figures: list[Figure] = []
    problems: list[str] = []
    runs: dict[str, dict] = {}
    for label, workers in (("default", None), ("workers=1", 1)):
        pv: dict = {"ceiling_wall_s": ceiling_run.wall_s, "write_only_wall_s": write_wall, "workers": workers}
        pv_dir = work / f"pacsvault-{workers or 'default'}"
        with running_daemon(pv_dir, DAEMON_CONFIG, workers) as daemon, PacsvaultClient(daemon.target) as client:
            _settle()
            log(f"pacsvaultd ({label}) pid {daemon.proc.pid}: ingest with {params.parallel} threads")
            run_figures = ingest_phase(client, psutil.Process(daemon.proc.pid), datas, ceiling_run, write_wall, pv,
                                       problems)
            run_figures.append(at_rest_figure(pv_dir / "daemon-data", sum(map(len, datas)), ceiling_run.stored_bytes))
            pv["stored_bytes_on_disk"] = _du(pv_dir / "daemon-data")
            log(f"pacsvault ({label}) retrieve")
            run_figures += retrieve_phase(client, items, datas, ceiling_run, params, pv, problems)
            log(f"pacsvault ({label}) find")
            run_figures += find_phase(client, items, params, pv, problems)
        run_figures += stop_figures(daemon, problems)
        figures += [dataclasses.replace(f, name=f"{f.name} [{label}]") for f in run_figures]
        runs[label] = pv
        shutil.rmtree(pv_dir / "daemon-data", ignore_errors=True)  # same free space and cache pressure for the next

    orth: dict = {}
    with orthanc_peer.running_orthanc(work / "orthanc", version) as orthanc:
        pool = orthanc_peer.HttpPool(orthanc.port)
        try:
            _settle()
            log(f"Orthanc {version} pid {orthanc.proc.pid} on 127.0.0.1:{orthanc.port}: "
                f"POST /instances with {params.parallel} threads")
            ids = orthanc_phases.ingest(pool, orthanc, items, datas, params.parallel, orth, problems)
            orth["stored_bytes_on_disk"] = _du(orthanc.storage_dir)
            log("orthanc retrieve")
            orthanc_phases.retrieve(pool, items, datas, ids, params, orth, problems)
            orthanc_phases.whole_study(pool, items, datas, ids, params, orth, problems)
            log("orthanc find")
            orthanc_phases.find(pool, items, params, orth, problems)
        finally:
            pool.close()
    if orthanc.exit_code not in (0, None):
        problems.append(f"Orthanc exited with {orthanc.exit_code}:\n{orthanc.log_tail()}")
    info = {"version": version, "config": orthanc.config, "notes": orthanc.notes}
    return figures, runs, orth, problems, info


def _settle() -> None:
    # Dirty pages of the previous phase are flushed first, so neither system pays for the other's writeback.
    os.sync()
    time.sleep(1.0)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compare(pv: dict, orth: dict, n: int, total: int, label: str = "") -> list[Comparison]:
    """pacsvault against Orthanc, figure by figure, with the process-model issue's targets
    (for the default run; ``label`` names another run, whose rows carry no targets)."""
    rows: list[Comparison] = []
    pv_wall, o_wall = pv["ingest"]["wall_s"], orth["ingest"]["wall_s"]
    t = (lambda target: "") if label else (lambda target: target)
    rows += [
        Comparison("ingest", "instances/s", n / pv_wall, n / o_wall, "inst/s", target=t(">= 1")),
        Comparison("ingest", "MB/s (original bytes)", total / MB / pv_wall, total / MB / o_wall, "MB/s"),
        Comparison("ingest", "fraction of machine ceiling (inst/s)", pv["ceiling_wall_s"] / pv_wall,
                   pv["ceiling_wall_s"] / o_wall, "x"),
        Comparison("ingest", "store latency under load p50", pv["ingest"]["latency"]["p50_ms"],
                   orth["ingest"]["latency"]["p50_ms"], "ms", higher_is_better=False),
        Comparison("ingest", "store latency under load p99", pv["ingest"]["latency"]["p99_ms"],
                   orth["ingest"]["latency"]["p99_ms"], "ms", higher_is_better=False),
        Comparison("ingest", "server CPU per instance", pv["ingest"]["daemon_cpu_s"] / n * 1000,
                   orth["ingest"]["orthanc_cpu_s"] / n * 1000, "ms", higher_is_better=False, target=t("<= 1")),
        Comparison("ingest", "machine idle during ingest", 100 * pv["ingest"]["machine_idle_fraction"],
                   100 * orth["ingest"].get("machine_idle_fraction", 0.0), "%", higher_is_better=False),
        Comparison("ingest", "client CPU per instance", pv["ingest"]["bench_cpu_s"] / n * 1000,
                   orth["ingest"]["bench_cpu_s"] / n * 1000, "ms", higher_is_better=False),
        Comparison("ingest", "bytes on disk after ingest (incl. index)", pv["stored_bytes_on_disk"] / MB,
                   orth["stored_bytes_on_disk"] / MB, "MB", higher_is_better=False),
    ]
    for cls in ("all", *SIZE_CLASSES):
        p = pv["get_instance"]["all"] if cls == "all" else pv["get_instance"]["by_size_class"].get(cls)
        o = orth["get_instance"]["all"] if cls == "all" else orth["get_instance"]["by_size_class"].get(cls)
        if p and o:
            for q, target in (("p50", "<= 1.5"), ("p99", "<= 1")):
                rows.append(Comparison("retrieve", f"single instance {cls} (n={p['n']}) {q}", p[f"{q}_ms"],
                                       o[f"{q}_ms"], "ms", higher_is_better=False, target=t(target)))
    ps, os_ = pv["get_study"], orth["get_study"]
    rows += [
        Comparison("retrieve", f"whole study ({ps['studies']} studies, {ps['instances']} inst)",
                   ps["bytes"] / MB / ps["wall_s"], os_["bytes"] / MB / os_["wall_s"], "MB/s", target=t("> 1")),
        Comparison("retrieve", "whole study instances/s", ps["instances"] / ps["wall_s"],
                   os_["instances"] / os_["wall_s"], "inst/s"),
    ]
    for key, label in (("find_patient_studies", "find studies by PatientID"),
                       ("find_study_uid", "find study by StudyInstanceUID")):
        for q in ("p50", "p99"):
            rows.append(Comparison("find", f"{label} (n={pv[key]['n']}) {q}", pv[key][f"{q}_ms"],
                                   orth[key][f"{q}_ms"], "ms", higher_is_better=False))
    for q in ("p50", "p99"):
        rows.append(Comparison("find", f"floor: gRPC health Check vs GET /system {q}",
                               pv["rpc_floor_health_check"][f"{q}_ms"], orth["rest_floor_get_system"][f"{q}_ms"],
                               "ms", higher_is_better=False))
    if label:
        rows = [dataclasses.replace(r, section=f"{r.section} ({label})") for r in rows]
    return rows


def compare_workers(default: dict, one: dict, n: int) -> list[Comparison]:
    """The default serving processes (one per core) against one: what the process model buys."""
    idle = 100 * default["ingest"]["machine_idle_fraction"]
    return [
        Comparison("processes", "ingest inst/s, default workers vs workers=1", n / default["ingest"]["wall_s"],
                   n / one["ingest"]["wall_s"], "inst/s", target="> 1"),
        Comparison("processes", "server CPU per instance, default vs workers=1",
                   default["ingest"]["daemon_cpu_s"] / n * 1000, one["ingest"]["daemon_cpu_s"] / n * 1000, "ms",
                   higher_is_better=False),
        Comparison("processes", "machine idle during ingest, default workers (%) vs 5%", idle, 5.0, "%",
                   higher_is_better=False, target="< 1"),
    ]


if __name__ == "__main__":
    sys.exit(main())
