#!/usr/bin/env python
"""Object-store layer benchmark: S3BlobAccess against plain boto3 on a real single-node Ceph.

    .venv/bin/python bench/s3_tier.py [--quick] [--rounds R] [--json-out FILE]

Starts the test Ceph (tests/ceph_cluster.py: monitor, manager, memstore OSD,
RADOS Gateway on loopback) and measures, on the same objects:

  upload:  S3BlobAccess.put (look-up, PUT with Content-MD5, ETag check; parts
           above the threshold) against a plain boto3 put_object loop, both 8 in
           flight, each into a fresh bucket, alternating over R rounds (median);
  read:    open() + read of a whole blob, one at a time, against a plain boto3
           get_object of the same object, alternating per object (p50 / p99);
           and the same read through CompressingBlobAccess (decrypt, inflate).

Objects: the stored (sealed, framed) forms of the benchmark's DICOM corpus,
as a tier receives them, and a set of 8 MiB blobs (incompressible, as stored).
Both clients use the same settings (path style, no payload hash, no extra
checksums), so the table shows the layer's own cost.

Then the same through real daemons with an s3 tier (s3_tier_daemon.py), where
the issue's targets apply: demotion >= 0.8 of a plain upload loop of the same
objects, GetInstance p50 <= 1.5x a plain GET of the same object, ingest while
demoting >= 0.9 of ingest with the mover idle. ``--layer-only`` skips them.
Every read-back is compared with the original (untimed); exit 1 if one differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # tests.ceph_cluster

import boto3  # noqa: E402
import corpus_cache  # noqa: E402
import s3_tier_daemon  # noqa: E402
from botocore.config import Config  # noqa: E402
from measure import percentile  # noqa: E402
from report import Figure, machine_info, render_table, write_json  # noqa: E402

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys  # noqa: E402
from pacsvault.daemon.crypto.keyring import Keyring, KeyringHolder  # noqa: E402
from pacsvault.daemon.digest import Digest  # noqa: E402
from pacsvault.daemon.storage.blob_access import read_all  # noqa: E402
from pacsvault.daemon.storage.blob_sealer import BlobSealer  # noqa: E402
from pacsvault.daemon.storage.compressing import CompressingBlobAccess  # noqa: E402
from pacsvault.daemon.storage.s3 import S3BlobAccess  # noqa: E402
from pacsvault.daemon.storage.s3_client import S3Settings  # noqa: E402
from tests.ceph_cluster import INSTALL_HINT, CephCluster, missing_tools, short_temp_dir  # noqa: E402

MIB = 1024 * 1024
IN_FLIGHT = 8


class Bench:
    def __init__(self, ceph: CephCluster) -> None:
        assert ceph.admin is not None
        self.ceph = ceph
        os.environ["AWS_ACCESS_KEY_ID"] = ceph.admin.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = ceph.admin.secret_key
        self.plain = boto3.client("s3", endpoint_url=ceph.endpoint, region_name="us-east-1", config=Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            max_pool_connections=16, s3={"addressing_style": "path", "payload_signing_enabled": False}))
        self._buckets = 0

    def bucket(self) -> str:
        self._buckets += 1
        name = f"bench-{os.getpid()}-{self._buckets}"
        self.plain.create_bucket(Bucket=name)
        return name

    def access(self, bucket: str) -> S3BlobAccess:
        return S3BlobAccess(S3Settings(self.ceph.endpoint, bucket, name="bench"))


def corpus_bytes(quick: bool) -> dict[str, bytes]:
    """The benchmark's DICOM corpus, by SOP Instance UID."""
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(120 if quick else 400, 1))
    return {item.sop_uid: Path(item.path).read_bytes() for item in items}


def stored_forms(quick: bool) -> tuple[CompressingBlobAccess, dict[str, list[tuple[Digest, bytes]]]]:
    """(address, stored form) of the corpus's instances, sealed as a tier receives them, and 8 MiB blobs;
    with the layer that sealed them (its keys open them again)."""
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(120 if quick else 400, 1))
    sealer = BlobSealer(ApplianceKeys.from_holder(KeyringHolder(Keyring.generate("bench"), None)))
    framing = CompressingBlobAccess(None, sealer=sealer)  # type: ignore[arg-type] - encode() only
    corpus = []
    for item in items:
        data = Path(item.path).read_bytes()
        address = framing.address(data)
        corpus.append((address, framing.encode(address, data)))
    large = []
    for _ in range(8 if quick else 24):
        data = os.urandom(8 * MIB)
        address = framing.address(data)
        large.append((address, framing.encode(address, data)))
    return framing, {"corpus": corpus, "8 MiB": large}


def upload_rate(bench: Bench, objects: list[tuple[Digest, bytes]], ours: bool) -> tuple[float, S3BlobAccess | str]:
    """MiB/s of stored bytes, IN_FLIGHT at a time, into a fresh bucket."""
    bucket = bench.bucket()
    access = bench.access(bucket)
    if ours:
        def one(item: tuple[Digest, bytes]) -> None:
            access.put(item[0], item[1])
    else:
        def one(item: tuple[Digest, bytes]) -> None:
            bench.plain.put_object(Bucket=bucket, Key=access.key_of(item[0]), Body=item[1])
    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(one, objects))
    return sum(len(b) for _, b in objects) / MIB / (time.perf_counter() - started), access


def read_latencies(bench: Bench, access: S3BlobAccess, objects: list[tuple[Digest, bytes]],
                   sealed: CompressingBlobAccess) -> dict[str, list[float]]:
    """Whole-object reads one at a time, the three ways alternating per object; checked untimed."""
    times: dict[str, list[float]] = {"plain": [], "ours": [], "sealed": []}
    wrong = []
    for digest, stored in objects:
        key = access.key_of(digest)
        started = time.perf_counter()
        plain = bench.plain.get_object(Bucket=access.settings.bucket, Key=key)["Body"].read()
        times["plain"].append(time.perf_counter() - started)
        started = time.perf_counter()
        reader = access.open(digest)
        ours = read_all(reader)
        times["ours"].append(time.perf_counter() - started)
        started = time.perf_counter()
        original = read_all(sealed.open(digest))
        times["sealed"].append(time.perf_counter() - started)
        if plain != stored or ours != stored or sealed.address(original) != digest:
            wrong.append(digest.hex[:16])
    if wrong:
        raise SystemExit(f"read back differs for {len(wrong)} objects, e.g. {wrong[:3]}")
    return times


def measure_set(bench: Bench, name: str, objects: list[tuple[Digest, bytes]], rounds: int,
                framing: CompressingBlobAccess) -> tuple[list[Figure], dict[str, Any]]:
    plain_rates, our_rates = [], []
    access: Any = None
    for _ in range(rounds):
        plain_rates.append(upload_rate(bench, objects, ours=False)[0])
        rate, access = upload_rate(bench, objects, ours=True)
        our_rates.append(rate)
    sealed = CompressingBlobAccess(access, sealer=framing.sealer)
    sample = objects if len(objects) <= 200 else objects[:: len(objects) // 200]
    times = read_latencies(bench, access, sample, sealed)
    ms = {k: [v * 1000 for v in vs] for k, vs in times.items()}
    size = statistics.median(len(b) for _, b in objects) / 1024
    plain_up, our_up = statistics.median(plain_rates), statistics.median(our_rates)
    figures = [
        Figure(name, f"upload, plain boto3 put_object, {IN_FLIGHT} in flight", plain_up, "MiB/s"),
        Figure(name, f"upload, S3BlobAccess.put (verified), {IN_FLIGHT} in flight", our_up, "MiB/s",
               baseline=plain_up, note="baseline: plain put_object; issue target >= 0.8 end to end"),
    ]
    for q in (50, 99):
        base = percentile(ms["plain"], q)
        figures += [
            Figure(name, f"whole read p{q}, plain get_object", base, "ms", higher_is_better=False),
            Figure(name, f"whole read p{q}, S3BlobAccess open + read", percentile(ms["ours"], q), "ms",
                   baseline=base, higher_is_better=False,
                   note="baseline: plain GET; issue target p50 <= 1.5x end to end" if q == 50 else ""),
            Figure(name, f"whole read p{q}, + unseal and inflate (CompressingBlobAccess)",
                   percentile(ms["sealed"], q), "ms", baseline=base, higher_is_better=False),
        ]
    raw = {"objects": len(objects), "median_kib": size, "plain_upload_mib_s": plain_rates,
           "ours_upload_mib_s": our_rates, "read_ms": ms}
    return figures, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="upload rounds per set (default 3, quick 1)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--layer-only", action="store_true", help="skip the measurements through daemons")
    parser.add_argument("--work-dir", default=None, help="where the daemons' data dirs go (default: a temp dir)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    rounds = args.rounds or (1 if args.quick else 3)
    out = args.json_out or BENCH_DIR / "results" / ("s3_tier_quick.json" if args.quick else "s3_tier.json")
    missing = missing_tools()
    if missing:
        print(f"s3_tier.py needs a real Ceph: missing {', '.join(missing)} ({INSTALL_HINT})", file=sys.stderr)
        return 2
    framing, sets = stored_forms(args.quick)
    started = time.perf_counter()
    root = short_temp_dir()
    ceph = CephCluster(root).start()
    up_s = time.perf_counter() - started
    try:
        figures: list[Figure] = []
        raw: dict[str, Any] = {"ceph_start_s": up_s}
        bench = Bench(ceph)
        for name, objects in sets.items():
            set_figures, raw[name] = measure_set(bench, name, objects, rounds, framing)
            figures += set_figures
        if not args.layer_only:
            work = Path(tempfile.mkdtemp(prefix="pacsvault-s3-bench-", dir=args.work_dir))
            try:
                daemon_figures, raw["daemon"] = s3_tier_daemon.measure(
                    work, bench, corpus_bytes(args.quick), rounds, 60 if args.quick else 200)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            figures += daemon_figures
    finally:
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"Ceph up in {up_s:.1f}s; {rounds} upload round(s) per set")
    print(render_table(figures))
    write_json(out, {"machine": machine_info(BENCH_DIR), "raw": raw}, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
