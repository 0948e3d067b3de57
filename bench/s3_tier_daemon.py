"""The object-store tier through real daemons (part of bench/s3_tier.py, on its Ceph).

Each run gets a fresh daemon (two workers' worth of defaults) with three tiers, all local
ones in the work dir: hot, warm, and the s3 tier "archive" on the test Ceph. The first half
of the corpus is stored with hot's high watermark at 1% (so it lands on warm); the daemon is
then restarted with the watermarks of the run:

  demotion:  warm's high watermark at 1%, no rate limit, nothing else running: the mover
             demotes every study on warm to the store in one pass. Its own figure for that
             pass (bytes / seconds, from its first read to its last delete) against a plain
             boto3 put_object loop of the same stored forms, 8 in flight as the mover keeps
             and as nice as the mover's threads (issue target >= 0.8);
  read:      then GetInstance of instances now in the store, one at a time, against a plain
             boto3 get_object of the same objects, alternating (p50 / p99; target p50 <= 1.5x);
             and, for reference, GetInstance of the other half stored onto hot: what a read
             costs the daemon without any store;
  ingest:    the second half stored by 8 clients onto hot, once with warm at 99% (mover idle)
             and once with warm at 1% and the mover's default rate limit, demoting warm to the
             store meanwhile (target >= 0.9 of idle).

Every read-back is compared with the original (untimed).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daemon_proc import running_daemon
from measure import percentile
from report import Figure

from pacsvault.client import PacsvaultClient
from pacsvault.daemon import config as config_module
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.daemon.digest import address_of
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.tiering import transfers

MIB = 1024 * 1024
IN_FLIGHT = 8  # the mover's transfers at once with the default s3_max_connections (16 // 2)
PARALLEL = 8


def write_config(path: Path, bench: Any, bucket: str, hot_high: float, warm_high: float, rate: int,
                 interval: float) -> Path:
    def local(name: str, high: float) -> str:
        return (f'[[tiers]]\nname = "{name}"\nvolumes = ["tiers/{name}"]\nhigh_watermark = {high}\n'
                f"low_watermark = {high / 2}\nreserve_bytes = 0\n")
    path.write_text(
        f"[tiering]\nmover_interval_s = {interval}\nmover_max_bytes_per_s = {rate}\npromote_on_access = false\n"
        + local("hot", hot_high) + local("warm", warm_high)
        + f'[[tiers]]\nname = "archive"\nbackend = "s3"\ns3_endpoint = "{bench.ceph.endpoint}"\n'
          f's3_bucket = "{bucket}"\ns3_quota_bytes = {1 << 40}\nreserve_bytes = 0\n')
    return path


def store_all(target: str, datas: list[bytes]) -> float:
    with PacsvaultClient(target) as client, ThreadPoolExecutor(PARALLEL) as pool:
        started = time.perf_counter()
        statuses = list(pool.map(lambda d: client.store(d).status, datas))
        wall = time.perf_counter() - started
    if set(statuses) != {"stored"}:
        raise SystemExit(f"unexpected store results: {sorted(set(statuses))}")
    return wall


def prepared(work: Path, bench: Any, first: list[bytes]) -> str:
    """A data dir with the first half on warm; returns the bucket of its s3 tier."""
    work.mkdir(parents=True, exist_ok=True)
    bucket = bench.bucket()
    config = write_config(work / "prepare.toml", bench, bucket, 0.01, 0.99, 100 * MIB, 3600)
    with running_daemon(work, config) as daemon:
        store_all(daemon.target, first)
        with PacsvaultClient(daemon.target) as client:
            warm = next(v for v in client.list_volumes().volumes if v.tier == "warm")
        if warm.blobs != len(first):
            raise SystemExit(f"preparation: {warm.blobs} of {len(first)} blobs on warm")
    return bucket


def plain_upload_rate(bench: Any, objects: list[tuple[str, bytes]]) -> float:
    """MiB/s of a plain boto3 put_object loop, IN_FLIGHT at a time, into a fresh bucket; its threads
    run as nice as the mover's (which give the CPU to serving first), so both get the same share."""
    bucket = bench.bucket()
    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT, initializer=transfers.yield_cpu) as pool:
        list(pool.map(lambda item: bench.plain.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects))
    return sum(len(b) for _, b in objects) / MIB / (time.perf_counter() - started)


def stored_forms(work: Path) -> list[tuple[str, bytes]]:
    root = work / "daemon-data" / "tiers" / "warm" / "blobs"
    return [(f"blobs/{p.relative_to(root).parts[0]}/{p.name[:2]}/{p.name}", p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()]


def wait_warm_empty(client: PacsvaultClient, timeout: float = 1200.0) -> float:
    """Seconds until warm holds nothing and the mover's pass that emptied it has ended."""
    started = time.perf_counter()
    while True:
        listed = client.list_volumes()
        if not next(v for v in listed.volumes if v.tier == "warm").blobs and listed.mover.blobs_moved:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit("warm was not demoted in time")
        time.sleep(0.02)


def run_demotion(work: Path, bench: Any, first: list[bytes], originals: dict[str, bytes],
                 local: dict[str, bytes], rounds: int, sample: int) -> tuple[list[Figure], dict[str, Any]]:
    bucket = prepared(work, bench, first)
    objects = stored_forms(work)
    plain = statistics.median(plain_upload_rate(bench, objects) for _ in range(rounds))
    config = write_config(work / "demote.toml", bench, bucket, 0.99, 0.01, 10 << 30, 5.0)
    with running_daemon(work, config) as daemon, PacsvaultClient(daemon.target) as client:
        wall = wait_warm_empty(client)
        mover = client.list_volumes().mover
        ours = mover.last_pass_bytes_per_second / MIB
        read = read_latencies(daemon.target, work, bucket, bench, originals, sample)
        store_all(daemon.target, list(local.values()))  # onto hot: the same daemon's local reads
        read["local"] = local_latencies(client, local, sample)
    figures = [
        Figure("daemon", f"demotion, plain boto3 put_object loop, {IN_FLIGHT} in flight", plain, "MiB/s"),
        Figure("daemon", "demotion to the s3 tier (mover's pass)", ours, "MiB/s", baseline=plain,
               note=f"target >= 0.8; {mover.blobs_moved} blobs, {sum(len(b) for _, b in objects) / MIB:.0f} MiB"),
    ]
    for q in (50, 99):
        base = percentile(read["plain"], q)
        figures += [
            Figure("daemon", f"read p{q}, plain boto3 get_object", base, "ms", higher_is_better=False),
            Figure("daemon", f"read p{q}, GetInstance of an instance on the s3 tier", percentile(read["ours"], q),
                   "ms", baseline=base, higher_is_better=False, note="target p50 <= 1.5x" if q == 50 else ""),
            Figure("daemon", f"read p{q}, GetInstance from the local hot tier (reference)",
                   percentile(read["local"], q), "ms", higher_is_better=False,
                   note="the daemon's own cost of a read, without the store" if q == 50 else ""),
        ]
    added = percentile(read["ours"], 50) - percentile(read["local"], 50)
    figures.append(Figure("daemon", "read p50, what the s3 tier adds to a GetInstance", added, "ms",
                          baseline=percentile(read["plain"], 50), higher_is_better=False,
                          note="s3-tier GetInstance less a local one, against the plain GET"))
    raw = {"objects": len(objects), "wall_until_empty_s": wall, "plain_upload_mib_s": plain,
           "mover_pass_mib_s": ours, "read_ms": read}
    return figures, raw


def read_latencies(target: str, work: Path, bucket: str, bench: Any, originals: dict[str, bytes],
                   sample: int) -> dict[str, list[float]]:
    keys = open_keys(config_module.from_dict({"data_dir": str(work / "daemon-data")}))
    assert keys is not None
    sealer = BlobSealer(keys)
    chosen = sorted(originals)[:: max(1, len(originals) // sample)][:sample]
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    wrong = []
    with PacsvaultClient(target) as client:
        for uid in chosen:
            address = address_of(originals[uid], sealer.address_key)
            key = f"blobs/blake3/{address.hex[:2]}/{address.hex}"
            started = time.perf_counter()
            bench.plain.get_object(Bucket=bucket, Key=key)["Body"].read()
            times["plain"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            data = client.get_instance(uid)
            times["ours"].append((time.perf_counter() - started) * 1000)
            if data != originals[uid]:
                wrong.append(uid)
    if wrong:
        raise SystemExit(f"GetInstance returned other bytes for {len(wrong)} instances, e.g. {wrong[:3]}")
    return times


def local_latencies(client: PacsvaultClient, local: dict[str, bytes], sample: int) -> list[float]:
    chosen = sorted(local)[:: max(1, len(local) // sample)][:sample]
    times = []
    for uid in chosen:
        started = time.perf_counter()
        data = client.get_instance(uid)
        times.append((time.perf_counter() - started) * 1000)
        if data != local[uid]:
            raise SystemExit(f"GetInstance returned other bytes for {uid}")
    return times


def run_ingest(work: Path, bench: Any, first: list[bytes], second: list[bytes], moving: bool) -> tuple[float, float]:
    """(seconds to store the second half, seconds from the first store until warm was demoted)."""
    bucket = prepared(work, bench, first)
    config = write_config(work / "ingest.toml", bench, bucket, 0.99, 0.01 if moving else 0.99, 100 * MIB, 0.2)
    with running_daemon(work, config) as daemon, PacsvaultClient(daemon.target) as client:
        wall = store_all(daemon.target, second)
        demoted_after = wall + wait_warm_empty(client) if moving else 0.0
    return wall, demoted_after


def measure(work: Path, bench: Any, datas: dict[str, bytes], rounds: int, sample: int) -> tuple[list[Figure], dict[str, Any]]:
    uids = sorted(datas)
    first = {u: datas[u] for u in uids[::2]}
    rest = {u: datas[u] for u in uids[1::2]}
    second = list(rest.values())
    figures, raw = run_demotion(work / "demotion", bench, list(first.values()), first, rest, rounds, sample)
    idle, _ = run_ingest(work / "idle", bench, list(first.values()), second, moving=False)
    moving, demoted_after = run_ingest(work / "moving", bench, list(first.values()), second, moving=True)
    figures += [
        Figure("daemon", f"ingest, mover idle ({PARALLEL} clients)", len(second) / idle, "inst/s"),
        Figure("daemon", "ingest while demoting to the s3 tier (100 MiB/s limit)", len(second) / moving, "inst/s",
               baseline=len(second) / idle,
               note=f"target >= 0.9; warm demoted {demoted_after:.1f}s after the stores began ({moving:.1f}s)"),
    ]
    raw.update({"ingest_idle_s": idle, "ingest_moving_s": moving, "demoted_after_s": demoted_after,
                "ingest_instances": len(second), "cpus": os.cpu_count()})
    return figures, raw
