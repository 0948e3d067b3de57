"""Each benchmark phase: measure against the daemon, then turn numbers into Figures.

Every phase appends its raw numbers to ``raw`` (kept in the JSON) and any
wrong answer to ``problems``; wrong answers fail the run, slow ones never do.
"""

from __future__ import annotations

import random
from pathlib import Path

import psutil

import ceiling
import measure
from corpus_cache import SIZE_CLASSES, STUDIES, Item, size_class
from daemon_proc import Daemon
from pacsvault.client import PacsvaultClient
from report import Figure

MB = 1e6


def ingest_phase(client: PacsvaultClient, daemon_proc: psutil.Process, datas: list[bytes],
                 base: ceiling.CeilingRun, write_wall: float, raw: dict, problems: list[str]) -> list[Figure]:
    n, total = len(datas), sum(map(len, datas))
    # The bench process alone: the daemon it started is its child.
    cpu_daemon, cpu_bench = tree_cpu_seconds(daemon_proc), _own_cpu_seconds()
    machine = psutil.cpu_times()
    run = measure.ingest(client, datas, base.parallel)
    idle = idle_fraction(machine, psutil.cpu_times())
    cpu_daemon, cpu_bench = tree_cpu_seconds(daemon_proc) - cpu_daemon, _own_cpu_seconds() - cpu_bench
    problems += [f"ingest: {f}" for f in run.failures[:20]]
    raw["ingest"] = {
        "wall_s": run.wall_s, "statuses": dict(run.statuses), "latency": measure.summary_ms(run.latencies_s),
        "daemon_cpu_s": cpu_daemon, "bench_cpu_s": cpu_bench, "daemon_rss_bytes": tree_rss_bytes(daemon_proc),
        "machine_idle_fraction": idle,
    }
    raw["ceiling"] = {"wall_s": base.wall_s, "write_only_wall_s": write_wall}
    return _ingest_figures(n, total, run, base, write_wall, cpu_daemon, cpu_bench, raw)


def _ingest_figures(n: int, total: int, run: measure.IngestRun, base: ceiling.CeilingRun, write_wall: float,
                    cpu_daemon: float, cpu_bench: float, raw: dict) -> list[Figure]:
    lat, s, p = raw["ingest"]["latency"], "ingest", base.parallel
    capacity = psutil.cpu_count() * run.wall_s
    mb_s, ceiling_mb_s, write_mb_s = total / MB / run.wall_s, total / MB / base.wall_s, total / MB / write_wall
    return [
        Figure(s, "store via gRPC", n / run.wall_s, "inst/s", n / base.wall_s, note="baseline: ceiling"),
        Figure(s, "store via gRPC", mb_s, "MB/s", ceiling_mb_s, note="baseline: ceiling"),
        Figure(s, "store via gRPC vs raw write+fsync", mb_s, "MB/s", write_mb_s, note="baseline: write+fsync only"),
        Figure(s, "ceiling: parse+digest+zstd+durable write", n / base.wall_s, "inst/s"),
        Figure(s, "ceiling: parse+digest+zstd+durable write", ceiling_mb_s, "MB/s"),
        Figure(s, "raw write+fsync only", write_mb_s, "MB/s"),
        Figure(s, f"store latency under load p50 (x{p})", lat["p50_ms"], "ms"),
        Figure(s, f"store latency under load p99 (x{p})", lat["p99_ms"], "ms"),
        *_store_latency_by_class(run.sizes, run.latencies_s, raw),
        *[Figure(s, f"ceiling CPU per file: {stage}", sec / n * 1000, "ms", note="summed over threads")
          for stage, sec in base.stage_s.items()],
        Figure(s, "daemon CPU per stored instance", cpu_daemon / n * 1000, "ms"),
        Figure(s, "bench client CPU per stored instance", cpu_bench / n * 1000, "ms"),
        Figure(s, "CPU busy during ingest (daemon+client)", 100 * (cpu_daemon + cpu_bench) / capacity, "%",
               note=f"of {psutil.cpu_count()} CPUs"),
        Figure(s, "machine idle during ingest", 100 * raw["ingest"]["machine_idle_fraction"], "%",
               note="whole machine, every process (target: under 5%)"),
    ]


def _store_latency_by_class(sizes: list[int], latencies_s: list[float], raw: dict) -> list[Figure]:
    # Large files dominate the tail; splitting shows whether small ones queue behind them.
    groups: dict[str, list[float]] = {c: [] for c in SIZE_CLASSES}
    for size, latency in zip(sizes, latencies_s, strict=True):
        groups[size_class(size)].append(latency)
    by_class = {c: measure.summary_ms(v) for c, v in groups.items() if v}
    raw["ingest"]["latency_by_size_class"] = by_class
    return [Figure("ingest", f"store latency under load {c} (n={v['n']}) {q}", v[f"{q}_ms"], "ms")
            for c, v in by_class.items() for q in ("p50", "p99")]


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds of a process and its children (pacsvaultd is a supervisor, a back office and workers)."""
    total = 0.0
    for member in [proc, *proc.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def tree_rss_bytes(proc: psutil.Process) -> int:
    total = 0
    for member in [proc, *proc.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def idle_fraction(before: object, after: object) -> float:
    """Share of the whole machine's CPU time spent idle (iowait counts as idle) between two samples."""
    spent = {f: getattr(after, f) - getattr(before, f) for f in after._fields}  # type: ignore[attr-defined]
    total = sum(spent.values())
    return (spent.get("idle", 0.0) + spent.get("iowait", 0.0)) / total if total else 0.0


def at_rest_figure(data_dir: Path, original_bytes: int, ceiling_bytes: int) -> Figure:
    """Original / stored size, index included: what compression buys on this corpus."""
    stored = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    return Figure("ingest", "size at rest: original / stored (with index)", original_bytes / stored, "x",
                  original_bytes / ceiling_bytes, note="baseline: zstd frames alone")


def retrieve_phase(client: PacsvaultClient, items: list[Item], datas: list[bytes], base: ceiling.CeilingRun,
                   params, raw: dict, problems: list[str]) -> list[Figure]:
    index_of = {item.sop_uid: i for i, item in enumerate(items)}
    chosen = measure.sample(items, params.retrieve_samples, params.seed)
    latencies = measure.timed_calls(lambda it: client.get_instance(it.sop_uid), chosen)
    local = measure.timed_calls(lambda it: ceiling.read_one(*base.blobs[index_of[it.sop_uid]]), chosen)
    originals = {it.sop_uid: datas[index_of[it.sop_uid]] for it in chosen}
    problems += [f"GetInstance {uid}: bytes differ from the stored file" for uid in
                 measure.check_retrieved(client, chosen, originals)]
    got, ref = measure.by_size_class(chosen, latencies), measure.by_size_class(chosen, local)
    raw["get_instance"] = {"all": measure.summary_ms(latencies), "by_size_class": got}
    raw["local_read"] = {"all": measure.summary_ms(local), "by_size_class": ref}
    figures = _latency_figures("retrieve", f"GetInstance (n={len(chosen)})", raw["get_instance"]["all"],
                               raw["local_read"]["all"])
    for sized in SIZE_CLASSES:
        if sized in got:
            label = f"GetInstance {sized} (n={got[sized]['n']})"
            figures += _latency_figures("retrieve", label, got[sized], ref[sized])
    return figures + _study_figures(client, items, base, index_of, params, raw)


def _latency_figures(section: str, label: str, got: dict, ref: dict | None,
                     note: str = "baseline: local read+unzstd+verify") -> list[Figure]:
    note = note if ref else ""
    return [Figure(section, f"{label} {q}", got[f"{q}_ms"], "ms", ref[f"{q}_ms"] if ref else None,
                   higher_is_better=False, note=note) for q in ("p50", "p99")]


def _study_figures(client: PacsvaultClient, items: list[Item], base: ceiling.CeilingRun, index_of: dict,
                   params, raw: dict) -> list[Figure]:
    study_uids = sorted({i.study_uid for i in items})
    chosen = random.Random(params.seed).sample(study_uids, min(params.studies, len(study_uids)))
    wall, nbytes, count = measure.study_throughput(client, chosen)
    members = [i for uid in chosen for i in items if i.study_uid == uid]
    local = sum(measure.timed_calls(lambda it: ceiling.read_one(*base.blobs[index_of[it.sop_uid]]), members))
    raw["get_study"] = {"studies": len(chosen), "instances": count, "bytes": nbytes, "wall_s": wall,
                        "local_read_s": local}
    label = f"GetStudy streamed ({len(chosen)} studies, {count} inst)"
    return [
        Figure("retrieve", label, nbytes / MB / wall, "MB/s", nbytes / MB / local, note="baseline: local read"),
        Figure("retrieve", label, count / wall, "inst/s", count / local, note="baseline: local read"),
    ]


def find_phase(client: PacsvaultClient, items: list[Item], params, raw: dict, problems: list[str]) -> list[Figure]:
    rng = random.Random(params.seed)
    patients = rng.choices(sorted({i.patient_id for i in items}), k=params.find_queries)
    studies = rng.choices(sorted({i.study_uid for i in items}), k=params.find_queries)
    by_patient = measure.timed_calls(measure.find_by_patient(client), patients)
    by_study = measure.timed_calls(measure.find_by_study(client), studies)
    # The cheapest call the daemon serves: what any unary RPC costs on this machine.
    floor = measure.timed_calls(lambda _: client.serving_status(), range(params.find_queries))
    problems += _check_find(client, set(patients), set(studies))
    raw["find_patient_studies"] = measure.summary_ms(by_patient)
    raw["find_study_uid"] = measure.summary_ms(by_study)
    raw["rpc_floor_health_check"] = measure.summary_ms(floor)
    note = "baseline: health-check RPC"
    return [
        *_latency_figures("find", f"ListPatientStudies by PatientID (n={len(patients)})",
                          raw["find_patient_studies"], raw["rpc_floor_health_check"], note),
        *_latency_figures("find", f"Find study by StudyInstanceUID (n={len(studies)})",
                          raw["find_study_uid"], raw["rpc_floor_health_check"], note),
        *_latency_figures("find", f"gRPC floor: health Check (n={len(floor)})", raw["rpc_floor_health_check"], None),
    ]


def _check_find(client: PacsvaultClient, patients: set[str], studies: set[str]) -> list[str]:
    """Untimed: each patient has its studies, each study is found by its UID."""
    problems = []
    for patient_id in sorted(patients):
        found = list(client.patient_studies(patient_id))
        if len(found) != STUDIES:
            problems.append(f"ListPatientStudies {patient_id}: {len(found)} studies, expected {STUDIES}")
    for study_uid in sorted(studies):
        found = [m.study.study_instance_uid for m in client.find("study", study_instance_uid=study_uid)]
        if found != [study_uid]:
            problems.append(f"Find study {study_uid}: got {found}")
    return problems


def stop_figures(daemon: Daemon, problems: list[str]) -> list[Figure]:
    problems += daemon.notes
    if daemon.exit_code != 0:
        problems.append(f"pacsvaultd exited with {daemon.exit_code} after SIGTERM:\n{daemon.log_tail()}")
    return [Figure("daemon", "SIGTERM to exit (idle)", daemon.stop_seconds, "s")]
