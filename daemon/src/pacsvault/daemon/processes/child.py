"""What every child of the supervisor does first: die with it, read its orders, report back.

The supervisor writes a JSON spec to the child's standard input (the config
as a table, the run folder, the reserved port, ...) and reads one JSON line
per report from the pipe named by ``PACSVAULT_STATUS_FD``: ``{"ready": ...}``
once the child serves, or ``{"error": ..., "exit": code}`` when it cannot start.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsvault.daemon import config as config_module

STATUS_FD = "PACSVAULT_STATUS_FD"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    config: config_module.Config
    run_dir: Path
    role: str
    index: int = 0
    # The client API's port, reserved by the supervisor (serving processes only).
    port: int = 0
    metrics_port_wanted: bool = False
    # DICOMweb's port, reserved by the supervisor like the API's (0: web.enabled is false).
    web_port: int = 0
    # The DIMSE door's port, reserved by the supervisor too (0: the door is off).
    dicom_port: int = 0


def start(role: str) -> ChildSpec:
    """Ties this process's life to the supervisor's, reads the spec, sets up logging."""
    parent = os.getppid()
    # A SIGKILLed supervisor must leave nothing serving: the kernel kills us when it dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent or parent == 1:
        os._exit(1)  # the supervisor died before the line above took effect
    raw = json.loads(sys.stdin.read())
    name = role if role == "back-office" else f"{role}-{raw.get('index', 0)}"
    logging.basicConfig(
        level=raw.get("log_level", "INFO"), stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s",
    )
    config = config_module.from_dict(raw["config"])
    return ChildSpec(config, Path(raw["run_dir"]), role, int(raw.get("index", 0)), int(raw.get("port", 0)),
                     bool(raw.get("metrics_port_wanted", False)), int(raw.get("web_port", 0)),
                     int(raw.get("dicom_port", 0)))


def report(**fields: Any) -> None:
    """One status line to the supervisor."""
    fd = int(os.environ.get(STATUS_FD, "-1"))
    if fd < 0:
        return
    line = json.dumps(fields).encode() + b"\n"
    try:
        os.write(fd, line)
    except OSError:
        pass  # the supervisor is gone; PDEATHSIG ends us next
