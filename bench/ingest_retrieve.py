#!/usr/bin/env python
"""Ingest / retrieve / find benchmark of a real pacsvaultd, against a same-run machine ceiling.

    .venv/bin/python bench/ingest_retrieve.py [--quick] [--instances N] [--parallel P] [--json-out FILE]

Every figure is printed beside the reference it should be judged against,
measured in the same run on the same files and disk: ingest against a bare
parse + digest + compress + durable-write loop (no gRPC, no index), retrieval
against reading and decompressing those same local blobs. Nothing here
asserts on time; it prints figures and ratios and fails only when the daemon
returns wrong answers. See bench/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

import ceiling
import corpus_cache
from corpus_cache import Item
from daemon_proc import running_daemon
from phases import at_rest_figure, find_phase, ingest_phase, retrieve_phase, stop_figures
from pacsvault.client import PacsvaultClient
from report import Figure, machine_info, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"
MB = 1e6


@dataclass(frozen=True)
class Params:
    instances: int
    parallel: int
    retrieve_samples: int
    find_queries: int
    studies: int
    seed: int
    quick: bool
    work_dir: str | None
    json_out: Path
    keep: bool


def parse_args(argv: list[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 200 instances and fewer samples (under a minute)")
    parser.add_argument("--instances", type=int, help="corpus size, rounded up to whole patients of 40 (default 1000)")
    parser.add_argument("--parallel", type=int, default=8, help="concurrent stores, and ceiling threads (default 8)")
    parser.add_argument("--samples", type=int, help="GetInstance and find samples each (default 300, quick 100)")
    parser.add_argument("--studies", type=int, help="studies streamed whole (default 10, quick 5)")
    parser.add_argument("--seed", type=int, default=1, help="corpus and sampling seed (default 1)")
    parser.add_argument("--work-dir", help="where the daemon and ceiling write; put it on the disk under test "
                        "(default: the system temp dir)")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (daemon data, log) for inspection")
    a = parser.parse_args(argv)
    samples = a.samples or (100 if a.quick else 300)
    return Params(
        instances=a.instances or (200 if a.quick else 1000), parallel=a.parallel, retrieve_samples=samples,
        find_queries=samples, studies=a.studies or (5 if a.quick else 10), seed=a.seed, quick=a.quick,
        work_dir=a.work_dir, json_out=a.json_out, keep=a.keep,
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    # pydicom warns about quirks of its own test files; irrelevant to timing.
    warnings.simplefilter("ignore")
    items, corpus_stats = prepare_corpus(params)
    datas = [Path(i.path).read_bytes() for i in items]  # in memory: the source disk is not under test
    work = Path(tempfile.mkdtemp(prefix="pacsvault-bench-", dir=params.work_dir))
    log(f"work dir {work}")
    try:
        figures, raw, problems = run_all(params, items, datas, work)
        machine = machine_info(work)
    finally:
        if not params.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(render_table(figures))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    record = {"params": {**asdict(params), "json_out": str(params.json_out)}, "machine": machine,
              "corpus": corpus_stats, "raw": raw, "problems": problems}
    write_json(params.json_out, record, figures)
    log(f"wrote {params.json_out}")
    return 1 if problems else 0


def prepare_corpus(params: Params) -> tuple[list[Item], dict[str, object]]:
    shape = corpus_cache.shape_for(params.instances, params.seed)
    started = time.perf_counter()
    items, cached = corpus_cache.load_or_generate(shape)
    how = "reused" if cached else f"generated in {time.perf_counter() - started:.1f}s"
    stats = {**corpus_cache.stats(items), "cache_key": shape.key(), "reused_from_cache": cached}
    log(f"corpus {shape.key()} {how}")
    print(describe_corpus(stats))
    return items, stats


def describe_corpus(stats: dict) -> str:
    classes = ", ".join(f"{c}: {v['count']} ({v['bytes'] / MB:.1f} MB)" for c, v in stats["size_classes"].items())
    return "\n".join([
        f"corpus: {stats['instances']} instances, {stats['total_bytes'] / MB:.1f} MB, "
        f"{stats['patients']} patients / {stats['studies']} studies / {stats['series']} series",
        f"  size classes: {classes}",
        "  modalities: " + ", ".join(f"{k or '?'} {v}" for k, v in stats["modalities"].items()),
        "  transfer syntaxes: " + ", ".join(f"{k} {v}" for k, v in stats["transfer_syntaxes"].items()),
        "  (copies of a few real files that differ only in identity: compression at rest looks better "
        "than on real traffic)",
    ])


def run_all(params: Params, items: list[Item], datas: list[bytes], work: Path) -> tuple[list[Figure], dict, list[str]]:
    log(f"ceiling: parse + digest + zstd + durable write, {params.parallel} threads, no daemon")
    ceiling_run = ceiling.ingest_ceiling(datas, work / "ceiling", params.parallel)
    write_wall = ceiling.write_only(datas, work / "write-only", params.parallel)
    shutil.rmtree(work / "write-only")
    figures: list[Figure] = []
    raw: dict[str, object] = {"ceiling_stage_s": ceiling_run.stage_s}
    problems: list[str] = []
    with running_daemon(work) as daemon, PacsvaultClient(daemon.target) as client:
        log(f"pacsvaultd pid {daemon.proc.pid} on {daemon.target}; ingest with {params.parallel} threads")
        figures += ingest_phase(client, psutil.Process(daemon.proc.pid), datas, ceiling_run, write_wall,
                                raw, problems)
        figures.append(at_rest_figure(work / "daemon-data", sum(map(len, datas)), ceiling_run.stored_bytes))
        log("retrieve")
        figures += retrieve_phase(client, items, datas, ceiling_run, params, raw, problems)
        log("find")
        figures += find_phase(client, items, params, raw, problems)
    figures += stop_figures(daemon, problems)
    return figures, raw, problems


if __name__ == "__main__":
    sys.exit(main())
