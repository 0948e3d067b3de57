"""The timed phases against the running daemon: ingest, retrieve and find."""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from corpus_cache import SIZE_CLASSES, Item
from pacsvault.client import PacsvaultClient

# Calls made before timing starts, so channel set-up and first-call imports
# in the daemon are not charged to the first sample.
WARMUP_CALLS = 5


@dataclass
class IngestRun:
    wall_s: float
    statuses: Counter[str]
    latencies_s: list[float]
    sizes: list[int]
    failures: list[str]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; exact enough for a few hundred samples."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms), "max_ms": max(ms)}


def ingest(client: PacsvaultClient, datas: Sequence[bytes], parallel: int) -> IngestRun:
    """Stores every file, ``parallel`` in flight, as one integrator process would."""

    def one(i: int) -> tuple[str, float, str]:
        started = time.perf_counter()
        result = client.store(datas[i])
        return result.status, time.perf_counter() - started, f"{result.code}: {result.message}"

    bar = tqdm(total=len(datas), desc="ingest", unit="inst", disable=not sys.stderr.isatty(), leave=False)
    results = []
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for outcome in pool.map(one, range(len(datas))):
            results.append(outcome)
            bar.update()
    wall = time.perf_counter() - started
    bar.close()
    failures = [f"#{i}: {status} {why}" for i, (status, _, why) in enumerate(results) if status != "stored"]
    return IngestRun(wall, Counter(r[0] for r in results), [r[1] for r in results], [len(d) for d in datas], failures)


def timed_calls(call: Callable[[object], object], args: Sequence[object]) -> list[float]:
    """Latency of ``call(arg)`` for each arg, one at a time: latency, not throughput."""
    for arg in args[:WARMUP_CALLS]:
        call(arg)
    latencies = []
    for arg in args:
        started = time.perf_counter()
        call(arg)
        latencies.append(time.perf_counter() - started)
    return latencies


def sample(items: Sequence[Item], n: int, seed: int) -> list[Item]:
    return random.Random(seed).sample(list(items), min(n, len(items)))


def by_size_class(items: Sequence[Item], latencies_s: Sequence[float]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {c: [] for c in SIZE_CLASSES}
    for item, latency in zip(items, latencies_s, strict=True):
        groups[item.size_class].append(latency)
    return {c: summary_ms(v) for c, v in groups.items() if v}


def check_retrieved(client: PacsvaultClient, items: Sequence[Item], originals: dict[str, bytes]) -> list[str]:
    """Untimed: the bytes that come back are the bytes that went in."""
    return [i.sop_uid for i in items if client.get_instance(i.sop_uid) != originals[i.sop_uid]]


def study_throughput(client: PacsvaultClient, study_uids: Sequence[str]) -> tuple[float, int, int]:
    """(wall seconds, bytes, instances) to stream each study in turn."""
    total_bytes = instances = 0
    started = time.perf_counter()
    for study_uid in study_uids:
        for _, data in client.iter_study(study_uid):
            total_bytes += len(data)
            instances += 1
    return time.perf_counter() - started, total_bytes, instances


def find_by_patient(client: PacsvaultClient) -> Callable[[object], object]:
    return lambda patient_id: list(client.patient_studies(str(patient_id)))


def find_by_study(client: PacsvaultClient) -> Callable[[object], object]:
    return lambda study_uid: list(client.find("study", study_instance_uid=str(study_uid)))
