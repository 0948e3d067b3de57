"""Figures, the printed table, machine information and the JSON record."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

PACKAGES = ("pacsvault", "grpcio", "protobuf", "lmdb", "zstandard", "blake3", "pydicom", "pydicom-data", "psutil")


@dataclass(frozen=True)
class Figure:
    """One measured number, with the same-run reference it is judged against."""

    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    # True for throughputs; for latencies the ratio is baseline / value, so in
    # both cases 1.0 means "as fast as the reference" and smaller is slower.
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.value or not self.baseline:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value


def render_table(figures: list[Figure]) -> str:
    header = f"{'figure':<56} {'value':>10} {'unit':<8} {'baseline':>10} {'of base':>8}  note"
    lines, section = [header, "-" * len(header)], None
    for f in figures:
        if f.section != section:
            section = f.section
            lines.append(f"[{section}]")
        base = "" if f.baseline is None else _num(f.baseline)
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
        lines.append(f"  {f.name:<54} {_num(f.value):>10} {f.unit:<8} {base:>10} {ratio:>8}  {f.note}")
    return "\n".join(lines)


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def machine_info(work_dir: Path) -> dict[str, object]:
    freq = psutil.cpu_freq()
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "cpu_mhz": round(freq.current) if freq else None,
        "memory_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "work_dir": str(work_dir),
        "work_dir_filesystem": _filesystem_of(work_dir),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _filesystem_of(path: Path) -> dict[str, str]:
    # The longest mount point that contains the path is the one it lives on.
    resolved = str(path.resolve())
    best = None
    for part in psutil.disk_partitions(all=True):
        if resolved.startswith(part.mountpoint) and (best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    return {"device": best.device, "fstype": best.fstype, "mountpoint": best.mountpoint} if best else {}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_json(path: Path, record: dict[str, object], figures: list[Figure]) -> None:
    record = {**record, "figures": [{**asdict(f), "ratio": f.ratio} for f in figures]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Comparison:
    """One figure measured on both systems in the same run; ratio is always pacsvault / Orthanc."""

    section: str
    name: str
    pacsvault: float | None
    orthanc: float | None
    unit: str
    higher_is_better: bool = True
    # The target for the ratio, e.g. ">= 2" or "<= 1"; empty when there is none.
    target: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.pacsvault or not self.orthanc:
            return None
        return self.pacsvault / self.orthanc

    @property
    def verdict(self) -> str:
        """'met' / 'MISSED' against the target, else 'pv ahead' / 'Orthanc ahead'."""
        ratio = self.ratio
        if ratio is None:
            return ""
        if self.target:
            op, bound = self.target.split()
            ok = {">=": ratio >= float(bound), ">": ratio > float(bound), "<=": ratio <= float(bound),
                  "<": ratio < float(bound)}[op]
            return "met" if ok else "MISSED"
        ahead = ratio > 1 if self.higher_is_better else ratio < 1
        return "pv ahead" if ahead else "Orthanc ahead"


def render_comparison(rows: list[Comparison]) -> str:
    header = (f"{'figure':<50} {'pacsvault':>10} {'Orthanc':>10} {'unit':<6} {'pv/Orth':>8} "
              f"{'target':>7}  verdict")
    lines, section = [header, "-" * len(header)], None
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append(f"[{section}]")
        pv = "" if r.pacsvault is None else _num(r.pacsvault)
        orth = "" if r.orthanc is None else _num(r.orthanc)
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        arrow = "(higher better)" if r.higher_is_better else "(lower better)"
        lines.append(f"  {r.name:<48} {pv:>10} {orth:>10} {r.unit:<6} {ratio:>8} {r.target:>7}  "
                     f"{r.verdict} {arrow if not r.target else ''}".rstrip())
    return "\n".join(lines)
