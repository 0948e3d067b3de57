"""Where the daemon's processes find each other: the run folder under the data dir.

Made afresh by the supervisor at each start, mode 0700 (only the daemon's
user may connect to what is in it)::

    <data_dir>/run/
        config.json          the config as the supervisor validated it (SIGHUP rewrites it)
        processes.json       role and pid of every process, for metrics and operators
        back-office.sock     the back office's internal gRPC listener
        outbox.bell          doorbell: new replication work
        blob.locks           striped cross-process locks (ingest vs deletion)
        metrics/             prometheus_client multiprocess files of the serving processes
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def run_dir(data_dir: Path) -> Path:
    return data_dir / "run"


def config_file(run: Path) -> Path:
    return run / "config.json"


def processes_file(run: Path) -> Path:
    return run / "processes.json"


def back_office_socket(run: Path) -> Path:
    return run / "back-office.sock"


def outbox_bell(run: Path) -> Path:
    return run / "outbox.bell"


def blob_locks(run: Path) -> Path:
    return run / "blob.locks"


def metrics_dir(run: Path) -> Path:
    return run / "metrics"


def write_processes(run: Path, processes: list[tuple[str, int]]) -> None:
    tmp = processes_file(run).with_suffix(".tmp")
    tmp.write_text(json.dumps([{"role": role, "pid": pid} for role, pid in processes]))
    os.replace(tmp, processes_file(run))


def read_processes(run: Path) -> list[tuple[str, int]]:
    try:
        return [(str(p["role"]), int(p["pid"])) for p in json.loads(processes_file(run).read_text())]
    except (OSError, ValueError, KeyError, TypeError):
        return []
