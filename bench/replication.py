#!/usr/bin/env python
"""Replication benchmark: does the peer keep up with ingest, and at what cost?

    .venv/bin/python bench/replication.py [--quick] [--parallel P] [--json-out FILE]

Two real daemons on loopback, peers over mutual TLS (4+2 erasure coding).
The corpus is stored on site A at full speed while the recovery point (the
age of the oldest unreplicated change) is sampled every 100 ms; then the
time until the backlog is empty. The baseline, in the same run, is the same
ingest into a daemon without replication. Target: RPO stays under 5 s.
Also the erasure codec alone (encode and decode MB/s, one thread).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import corpus_cache
from daemon_proc import running_daemon
from measure import percentile
from pacsvault.client import PacsvaultClient
from pacsvault.daemon.replication import certs
from pacsvault.daemon.replication.bench import bench_codec
from report import Figure, machine_info, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
MB = 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, name: str, peer: str, cert_dir: Path, listen: int, peer_port: int) -> Path:
    path.write_text(
        "[replication]\nenabled = true\n"
        f'appliance_name = "{name}"\npeer_name = "{peer}"\npeer_address = "127.0.0.1:{peer_port}"\n'
        f'listen = "127.0.0.1:{listen}"\nca_file = "{cert_dir / "ca.pem"}"\n'
        f'cert_file = "{cert_dir / (name + ".pem")}"\nkey_file = "{cert_dir / (name + ".key")}"\n'
        "sender_interval_s = 0.2\nmax_bytes_per_s = 1073741824\n"
    )
    return path


def store_all(target: str, datas: list[bytes], parallel: int) -> float:
    with PacsvaultClient(target) as client, ThreadPoolExecutor(parallel) as pool:
        started = time.perf_counter()
        statuses = set(pool.map(lambda d: client.store(d).status, datas))
        wall = time.perf_counter() - started
    if statuses != {"stored"}:
        raise SystemExit(f"unexpected store results: {sorted(statuses)}")
    return wall


def sample_rpo(target: str, stop: threading.Event, samples: list[float]) -> None:
    with PacsvaultClient(target) as client:
        while not stop.is_set():
            samples.append(client.replication_status().oldest_pending_age_seconds)
            time.sleep(0.1)


def replicated_run(work: Path, datas: list[bytes], parallel: int) -> dict[str, float]:
    cert_dir = work / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": free_port(), "site-b": free_port()}
    a_cfg = write_config(work / "a.toml", "site-a", "site-b", cert_dir, ports["site-a"], ports["site-b"])
    b_cfg = write_config(work / "b.toml", "site-b", "site-a", cert_dir, ports["site-b"], ports["site-a"])
    with ExitStack() as stack:
        stack.enter_context(running_daemon(work / "site-b", b_cfg))
        a = stack.enter_context(running_daemon(work / "site-a", a_cfg))
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rpo, args=(a.target, stop, samples))
        started = time.perf_counter()
        sampler.start()
        ingest = store_all(a.target, datas, parallel)
        with PacsvaultClient(a.target) as client:
            while client.replication_status().pending_entries:
                time.sleep(0.05)
            drained = time.perf_counter() - started
            replicated = client.replication_status().bytes_replicated
        stop.set()
        sampler.join()
    return {"ingest_s": ingest, "drained_s": drained, "bytes": replicated,
            "rpo_max": max(samples, default=0.0), "rpo_p95": percentile(samples, 95) if samples else 0.0,
            "tail_s": drained - ingest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--work-dir")
    parser.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "replication.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(200 if args.quick else 1000, 1))
    datas = [Path(i.path).read_bytes() for i in items]
    work = Path(tempfile.mkdtemp(prefix="pacsvault-replication-bench-", dir=args.work_dir))
    with running_daemon(work / "plain") as plain:
        baseline = store_all(plain.target, datas, args.parallel)
    run = replicated_run(work, datas, args.parallel)
    codec = bench_codec(16 * 1024 * 1024, 4, 2)
    total_mb = sum(map(len, datas)) / MB
    figures = [
        Figure("ingest", "store with replication on", len(datas) / run["ingest_s"], "inst/s",
               baseline=len(datas) / baseline, note="baseline: same ingest, replication off"),
        Figure("replication", "throughput, first store to empty backlog", run["bytes"] / MB / run["drained_s"],
               "MB/s", note=f"{total_mb:.0f} MB corpus, 4+2 shards over mTLS"),
        Figure("replication", "RPO during ingest, max", run["rpo_max"], "s", note="target < 5 s"),
        Figure("replication", "RPO during ingest, p95", run["rpo_p95"], "s"),
        Figure("replication", "backlog drained after ingest ended", run["tail_s"], "s"),
        Figure("codec", "erasure encode 16 MiB, 4+2, one thread", float(codec["encode_mb_s"]), "MB/s"),
        Figure("codec", "decode from the 4 data shards", float(codec["decode_mb_s"]), "MB/s"),
        Figure("codec", "decode with 2 data shards lost", float(codec["decode_degraded_mb_s"]), "MB/s"),
    ]
    print(render_table(figures))
    write_json(args.json_out, {"machine": machine_info(work), "run": run, "codec": codec}, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
