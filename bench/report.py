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
