"""A real pacsvaultd subprocess on a fresh data dir, stopped with SIGTERM like systemd would."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pacsvault.client import PacsvaultClient

START_TIMEOUT_S = 30.0
# The daemon's default shutdown grace is 30 s; an idle daemon should stop at once.
STOP_TIMEOUT_S = 40.0


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    target: str
    log_path: Path
    dicom_port: int = 0
    exit_code: int | None = None
    web_port: int = 0  # DICOMweb (bench/dicomweb.py)
    stop_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def daemon_command() -> str:
    return program_beside_python("pacsvaultd", "run with the project's venv python (.venv/bin/python)")


def program_beside_python(name: str, remedy: str) -> str:
    """The console script beside this interpreter (so the venv's is the one used), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: {remedy}")
    return found


@contextmanager
def running_daemon(work_dir: Path, config: Path | None = None, workers: int | None = None) -> Iterator[Daemon]:
    """Starts pacsvaultd on port 0 with its own data dir; SIGTERMs it on exit.

    ``workers``: serving processes (None: the daemon's default, one per core).
    """
    data_dir, port_file, log_path = work_dir / "daemon-data", work_dir / "daemon.port", work_dir / "daemon.log"
    dicom_port_file = work_dir / "daemon.dicom-port"
    argv = [daemon_command(), "--listen", "127.0.0.1:0", "--port-file", str(port_file),
            "--data-dir", str(data_dir), "--log-level", "WARNING", "--metrics-listen", "127.0.0.1:0",
            "--web-listen", "127.0.0.1:0", "--web-port-file", str(work_dir / "daemon.web-port"),
            "--dicom-listen", "127.0.0.1:0", "--dicom-port-file", str(dicom_port_file)]
    if config is not None:
        argv += ["--config", str(config)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    work_dir.mkdir(parents=True, exist_ok=True)
    # A daemon restarted on the same work dir (index_scale.py) must not read its predecessor's port.
    port_file.unlink(missing_ok=True)
    dicom_port_file.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
    daemon = Daemon(proc, "", log_path)
    try:
        daemon.target = f"127.0.0.1:{_wait_for_port(daemon, port_file)}"
        daemon.web_port = int((work_dir / "daemon.web-port").read_text())  # written before the port file
        if dicom_port_file.exists():  # written before the port file; absent with [dicom] enabled = false
            daemon.dicom_port = int(dicom_port_file.read_text())
        _wait_until_serving(daemon)
        yield daemon
    finally:
        _stop(daemon)


def _wait_for_port(daemon: Daemon, port_file: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"pacsvaultd exited with {daemon.proc.returncode}:\n{daemon.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"pacsvaultd wrote no port file in {START_TIMEOUT_S}s:\n{daemon.log_tail()}")
        time.sleep(0.02)
    return int(port_file.read_text())


def _wait_until_serving(daemon: Daemon) -> None:
    # The port file is written after the server starts, but health is the contract.
    deadline = time.monotonic() + START_TIMEOUT_S
    with PacsvaultClient(daemon.target, timeout=2.0) as client:
        while True:
            try:
                if client.serving_status() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pacsvaultd not SERVING after {START_TIMEOUT_S}s:\n{daemon.log_tail()}")
            time.sleep(0.05)


def _stop(daemon: Daemon) -> None:
    if daemon.proc.poll() is not None:
        daemon.exit_code = daemon.proc.returncode
        daemon.notes.append(f"pacsvaultd had already exited with {daemon.exit_code}")
        return
    started = time.perf_counter()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        daemon.exit_code = daemon.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.exit_code = daemon.proc.wait()
        daemon.notes.append(f"pacsvaultd ignored SIGTERM for {STOP_TIMEOUT_S}s and was killed")
    daemon.stop_seconds = time.perf_counter() - started
