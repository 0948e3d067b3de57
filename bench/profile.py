#!/usr/bin/env python
"""Where a stored and a retrieved instance spend their time: a sampled profile of a real pacsvaultd.

    .venv/bin/python bench/profile.py [--quick] [--instances N] [--parallel P] [--json-out FILE]

The benchmarks say how fast; this says why. While the corpus is ingested (and
then while small instances are read back one at a time), py-spy samples every
thread of every serving process of the daemon, and /proc gives each thread's
CPU time and context switches, in every process (supervisor, back office,
workers). The same parse + digest + compress + durable-write loop that
ingest_retrieve.py uses as the machine ceiling is measured in this process for
comparison. It prints:

- CPU (user and kernel) and context switches per stored instance: the daemon,
  this benchmark client, and the ceiling loop;
- the same per daemon thread role (RPC workers, index writer, audit flusher,
  gRPC's poller and its C threads);
- the RPC workers' time per stored instance and per small GetInstance, split
  into stages (waiting included: a group commit or an fsync is time a call
  spends, though not CPU).

The raw py-spy stacks (collapsed, one line per stack) are written beside the
JSON for a flame graph. Needs ptrace rights over the daemon (root, or
kernel.yama.ptrace_scope = 0). Prints figures only; fails only on wrong answers.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import psutil
from pathlib import Path

import ceiling
import corpus_cache
import measure
from daemon_proc import program_beside_python, running_daemon
from pacsvault.client import PacsvaultClient
from report import machine_info, write_json

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "profile.json"
SMALL = 64 * 1024
TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # /proc/<pid>/task/<tid>/stat counts CPU in these ticks

# First matching rule names a sample's stage; the order puts the narrower stage
# first, since every worker stack also holds the gRPC frames around the handler.
INGEST_STAGES = [
    ("index: flushes before the commit (syncfs, audit)", ("IndexEnvironment._flushed",)),
    ("index: group commit (LMDB, fsync) and waiting for it", ("IndexEnvironment.write",)),
    ("audit: begin record written", ("AuditInterceptor._begin", "AuditInterceptor._recorded")),
    ("blob: write + rename (flushed with the commit)", ("LocalBlobAccess._write",)),
    ("blob: zstd + AES-GCM frames", ("CompressingBlobAccess.encode",)),
    ("parse DICOM header (pydicom)", ("dicom/parse.py",)),
    ("BLAKE3: plain + keyed address", ("daemon/digest.py",)),
    ("index: lookups before the write", ("Catalog.known_instance", "Catalog.blob")),
    ("blob: volume checks (stat, statvfs, mkdir)", ("TieredBlobStore.place",)),
    ("gRPC: receive the request messages", ("_RequestIterator",)),
    ("audit: end record", ("AuditInterceptor._end",)),
    ("gRPC + interceptors: dispatch, answer, status", ("grpc/_server.py",)),
]
RETRIEVE_STAGES = [
    ("gRPC: send the message, wait until it left", ("_send_response",)),
    ("gRPC: send the status", ("_status (",)),
    ("audit: begin and end records", ("AuditInterceptor._begin", "AuditInterceptor._end",
                                      "AuditInterceptor._recorded")),
    ("blob: open, decrypt, decompress, verify", ("Retrieval.read", "Retrieval.open_blob")),
    ("index: instance lookup", ("Retrieval.instance",)),
    ("handler: the rest", ("ArchiveServicer.",)),
    ("gRPC + interceptors: dispatch, status", ("grpc/_server.py",)),
]
IDLE = "idle: worker waiting for a call"


@dataclass(frozen=True)
class Params:
    instances: int
    parallel: int
    retrieve_seconds: float
    rate: int
    seed: int
    work_dir: str | None
    json_out: Path


def parse_args(argv: list[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 instances, 3 s of retrieval")
    parser.add_argument("--instances", type=int, help="corpus size (default 2000, the side-by-side corpus)")
    parser.add_argument("--parallel", type=int, default=8, help="concurrent stores, and ceiling threads (default 8)")
    parser.add_argument("--rate", type=int, default=100, help="samples per second per thread (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--work-dir", help="where the daemon and the ceiling write (default: the system temp dir)")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    a = parser.parse_args(argv)
    return Params(instances=a.instances or (400 if a.quick else 2000), parallel=a.parallel,
                  retrieve_seconds=3.0 if a.quick else 8.0, rate=a.rate, seed=a.seed, work_dir=a.work_dir,
                  json_out=a.json_out)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- what /proc says about each thread ---------------------------------------

@dataclass(frozen=True)
class ThreadCounts:
    user_s: float
    system_s: float
    switches: int  # voluntary (it blocked) and involuntary (it was preempted)


def thread_counts(pid: int) -> dict[int, ThreadCounts]:
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended between listing and reading
        switches = dict(re.findall(r"^(\w*ctxt_switches):\s*(\d+)", status, re.M))
        counts[int(task.name)] = ThreadCounts(int(fields[11]) * TICK_S, int(fields[12]) * TICK_S,
                                              int(switches["voluntary_ctxt_switches"])
                                              + int(switches["nonvoluntary_ctxt_switches"]))
    return counts


def thread_roles(pid: int) -> dict[int, str]:
    """Native thread id -> role, from the Python thread names py-spy dump reports."""
    dump = subprocess.run([_py_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, check=True).stdout
    roles = {}
    for tid, name in re.findall(r'^Thread (?:0x[0-9A-Fa-f]+|(\d+)) .*?: "(.*?)"', dump, re.M):
        if tid:
            roles[int(tid)] = "RPC workers" if name.startswith("rpc_") else name
    return roles


def by_role(before: dict[tuple[int, int], ThreadCounts], after: dict[tuple[int, int], ThreadCounts],
            roles: dict[tuple[int, int], str]) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"user_s": 0.0, "system_s": 0.0, "switches": 0.0})
    for tid, end in after.items():
        start = before.get(tid, ThreadCounts(0.0, 0.0, 0))
        role = roles.get(tid, f"{process_role(tid, roles)}: gRPC core threads (C, no Python)")
        role = role.replace("(_serve)", "gRPC poller (Python)") if role.endswith("(_serve)") else role
        totals[role]["user_s"] += end.user_s - start.user_s
        totals[role]["system_s"] += end.system_s - start.system_s
        totals[role]["switches"] += end.switches - start.switches
    return dict(totals)


def process_role(tid: tuple[int, int], roles: dict[tuple[int, int], str]) -> str:
    """The role of the process a thread belongs to, from any of its named threads."""
    return next((role.split(":", 1)[0] for (pid, _), role in roles.items() if pid == tid[0]), str(tid[0]))


def rusage_self() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


# -- py-spy -------------------------------------------------------------------

def _py_spy() -> str:
    return program_beside_python("py-spy", "install the dev extras (.venv/bin/pip install -e '.[dev]')")


class Sampler:
    """py-spy recording every thread (idle ones too) until the block ends."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        self.out = out
        self.argv = [_py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads",
                     "--idle", "--nonblocking", "--output", str(out)]

    def __enter__(self) -> Sampler:
        self.out.unlink(missing_ok=True)  # a stale file must not pass for this run's profile
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # py-spy attaches before the measured work starts
        if self.proc.poll() is not None:
            raise SystemExit(f"py-spy could not attach (ptrace rights?): {self.proc.stderr.read()}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = self.proc.communicate(timeout=60)
        if not self.out.exists():
            raise SystemExit(f"py-spy wrote no profile: {err}")


class Samplers:
    """One py-spy Sampler per serving process; their stacks end up in one collapsed file."""

    def __init__(self, pids: dict[int, str], out: Path, rate: int) -> None:
        self.out = out
        self.samplers = [Sampler(pid, out.with_name(f"{out.stem}-{role}{out.suffix}"), rate)
                         for pid, role in pids.items() if role.startswith("worker")]

    def __enter__(self) -> Samplers:
        for sampler in self.samplers:
            sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for sampler in self.samplers:
            sampler.__exit__(*exc)
        self.out.write_text("".join(s.out.read_text() for s in self.samplers))
        for sampler in self.samplers:
            sampler.out.unlink()


def all_thread_counts(pids: dict[int, str]) -> dict[tuple[int, int], ThreadCounts]:
    return {(pid, tid): counts for pid in pids for tid, counts in thread_counts(pid).items()}


def all_thread_roles(pids: dict[int, str]) -> dict[tuple[int, int], str]:
    """(pid, tid) -> "<process role>: <thread role>"."""
    roles = {}
    for pid, role in pids.items():
        for tid, thread in thread_roles(pid).items():
            roles[(pid, tid)] = f"{role}: {thread}"
    return roles


def stage_seconds(collapsed: Path, stages: list[tuple[str, tuple[str, ...]]], rate: int) -> dict[str, float]:
    """Sampled seconds the RPC workers spent in each stage (a stack's first matching rule)."""
    seconds: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if ": rpc_" not in stack.split(";", 1)[0]:  # py-spy's thread label: "thread (<id>): rpc_3"
            continue
        if "_WorkItem.run" not in stack:
            seconds[IDLE] += int(count) / rate
            continue
        stage = next((name for name, marks in stages if any(m in stack for m in marks)), "other")
        seconds[stage] += int(count) / rate
    return dict(seconds)


# -- the run --------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    warnings.simplefilter("ignore")
    items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(params.instances, params.seed))
    datas = [Path(i.path).read_bytes() for i in items]
    n, total = len(datas), sum(map(len, datas))
    log(f"corpus: {n} instances, {total / 1e6:.0f} MB")
    work = Path(tempfile.mkdtemp(prefix="pacsvault-profile-", dir=params.work_dir))
    stacks_dir = params.json_out.parent
    stacks_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    try:
        ceiling_cpu = measure_ceiling(datas, work, params.parallel)
        with running_daemon(work / "daemon") as daemon, PacsvaultClient(daemon.target) as client:
            pids = daemon_processes(daemon.proc.pid)
            ingest = profile_ingest(client, pids, datas, params, stacks_dir / "profile-ingest.txt", problems)
            small = [i for i in items if i.size < SMALL]
            retrieve = profile_retrieve(client, pids, small, params, stacks_dir / "profile-retrieve.txt")
        machine = machine_info(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(ceiling_cpu, ingest, retrieve))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    record = {"params": {**params.__dict__, "json_out": str(params.json_out)}, "machine": machine,
              "ceiling": ceiling_cpu, "ingest": ingest, "retrieve": retrieve, "problems": problems,
              "stacks": [str(stacks_dir / "profile-ingest.txt"), str(stacks_dir / "profile-retrieve.txt")]}
    write_json(params.json_out, record, [])
    log(f"wrote {params.json_out} and the collapsed stacks beside it")
    return 1 if problems else 0


def measure_ceiling(datas: list[bytes], work: Path, parallel: int) -> dict[str, float]:
    log(f"ceiling loop, {parallel} threads")
    user, system, switches = rusage_self()
    run = ceiling.ingest_ceiling(datas, work / "ceiling", parallel)
    user2, system2, switches2 = rusage_self()
    shutil.rmtree(work / "ceiling", ignore_errors=True)
    n = len(datas)
    return {"inst_per_s": n / run.wall_s, "user_ms": (user2 - user) / n * 1000,
            "system_ms": (system2 - system) / n * 1000, "switches": (switches2 - switches) / n}


def daemon_processes(supervisor: int) -> dict[int, str]:
    """pid -> role ("supervisor", "back-office", "worker-N") of every process of the daemon."""
    roles = {supervisor: "supervisor"}
    for child in psutil.Process(supervisor).children():
        cmdline = child.cmdline()
        roles[child.pid] = ("back-office" if "pacsvault.daemon.processes.back_office" in cmdline
                            else f"worker-{cmdline[-1]}")
    return roles


def profile_ingest(client: PacsvaultClient, pids: dict[int, str], datas: list[bytes], params: Params, out: Path,
                   problems: list[str]) -> dict[str, object]:
    for data in datas[:16]:  # first-call imports and every connection's set-up are not what we profile
        client.store(data)
    rest = datas[16:]
    log(f"ingest of {len(rest)} instances, {params.parallel} in flight, sampled")
    roles = all_thread_roles(pids)
    with Samplers(pids, out, params.rate):
        before, mine = all_thread_counts(pids), rusage_self()
        run = measure.ingest(client, rest, params.parallel)
        after, mine2 = all_thread_counts(pids), rusage_self()
    problems += [f"ingest: {f}" for f in run.failures[:20]]
    n = len(rest)
    roles |= all_thread_roles(pids)  # threads started during the run
    return {
        "instances": n, "inst_per_s": n / run.wall_s,
        "client_user_ms": (mine2[0] - mine[0]) / n * 1000, "client_system_ms": (mine2[1] - mine[1]) / n * 1000,
        "client_switches": (mine2[2] - mine[2]) / n,
        "roles": {role: {"user_ms": v["user_s"] / n * 1000, "system_ms": v["system_s"] / n * 1000,
                         "switches": v["switches"] / n}
                  for role, v in by_role(before, after, roles).items()},
        "stages_ms": {k: v / n * 1000 for k, v in stage_seconds(out, INGEST_STAGES, params.rate).items()},
    }


def profile_retrieve(client: PacsvaultClient, pids: dict[int, str], small: list[corpus_cache.Item], params: Params,
                     out: Path) -> dict[str, object]:
    log(f"get_instance of instances under 64 KiB, one at a time for {params.retrieve_seconds:.0f} s, sampled")
    for item in small[:20]:
        client.get_instance(item.sop_uid)
    latencies = []
    with Samplers(pids, out, params.rate):
        deadline = time.monotonic() + params.retrieve_seconds
        while time.monotonic() < deadline:
            item = small[len(latencies) % len(small)]
            started = time.perf_counter()
            client.get_instance(item.sop_uid)
            latencies.append(time.perf_counter() - started)
    calls = len(latencies)
    return {"calls": calls, "latency": measure.summary_ms(latencies),
            "stages_ms": {k: v / calls * 1000 for k, v in stage_seconds(out, RETRIEVE_STAGES, params.rate).items()}}


def render(ceiling_cpu: dict[str, float], ingest: dict, retrieve: dict) -> str:
    lines = [f"[ingest] {ingest['inst_per_s']:.0f} inst/s through the daemon; ceiling loop "
             f"{ceiling_cpu['inst_per_s']:.0f} inst/s (same corpus, same threads)",
             f"  {'CPU and context switches per instance':52s} {'user ms':>8s} {'kernel ms':>9s} {'switches':>9s}"]
    roles = ingest["roles"]
    daemon = {k: sum(v[k] for v in roles.values()) for k in ("user_ms", "system_ms", "switches")}
    lines.append(_cpu_line("daemon, all threads", daemon))
    for role, v in sorted(roles.items(), key=lambda kv: -(kv[1]["user_ms"] + kv[1]["system_ms"])):
        if v["user_ms"] + v["system_ms"] >= 0.01 or v["switches"] >= 0.5:
            lines.append(_cpu_line(f"  {role}", v))
    lines.append(_cpu_line("benchmark client (this process)", {
        "user_ms": ingest["client_user_ms"], "system_ms": ingest["client_system_ms"],
        "switches": ingest["client_switches"]}))
    lines.append(_cpu_line("ceiling loop (parse, BLAKE3, zstd, write + fsync)", ceiling_cpu))
    lines += _stage_lines("RPC worker time per stored instance, by stage (ms; waits included)",
                          ingest["stages_ms"])
    lat = retrieve["latency"]
    lines.append(f"[retrieve] GetInstance <64KiB, one at a time: p50 {lat['p50_ms']:.2f} ms, "
                 f"p99 {lat['p99_ms']:.2f} ms over {retrieve['calls']} calls")
    lines += _stage_lines("RPC worker time per call, by stage (ms)", retrieve["stages_ms"])
    return "\n".join(lines)


def _cpu_line(label: str, v: dict[str, float]) -> str:
    return f"  {label:52s} {v['user_ms']:8.2f} {v['system_ms']:9.2f} {v['switches']:9.0f}"


def _stage_lines(title: str, stages: dict[str, float]) -> list[str]:
    busy = {k: v for k, v in stages.items() if k != IDLE}
    total = sum(busy.values())
    lines = [f"  {title}"]
    for name, ms in sorted(busy.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {name:50s} {ms:8.2f} {100 * ms / total:5.1f} %")
    lines.append(f"    {'total':50s} {total:8.2f}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
