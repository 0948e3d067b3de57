"""pacsvaultd's supervisor: one data dir, one back office, N serving workers.

It takes the data-dir lock, reserves the client API's port, starts the back
office (which checks the data dir and runs what must run once) and, once it
is ready, the workers, which all accept on the reserved port. Then it only
watches: a worker or back office that dies is started again (the others keep
serving meanwhile); SIGTERM drains the workers, then stops the back office;
SIGHUP re-reads the config and reaches every process. The children die with
it (PR_SET_PDEATHSIG), so a SIGKILLed supervisor leaves nothing serving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsvault.daemon import __version__
from pacsvault.daemon import config as config_module
from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import ConfigError, PacsvaultError
from pacsvault.daemon.processes import layout, ports
from pacsvault.daemon.processes.child import STATUS_FD
from pacsvault.daemon.processes.locks import DataDirLock

log = logging.getLogger("pacsvaultd")
# A child that dies within this long of starting is crash-looping: wait longer before the next start.
_QUICK_DEATH_S = 10.0
_MAX_RESTART_DELAY_S = 30.0
_START_TIMEOUT_S = 300.0


class StartFailed(PacsvaultError):
    """A child could not start; ``exit_code`` is what pacsvaultd exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Child:
    role: str  # "back-office" or "worker"
    index: int
    proc: subprocess.Popen[bytes]
    status: int  # read end of its status pipe
    started: float
    restarts: int = 0
    buffer: bytes = b""

    @property
    def name(self) -> str:
        return self.role if self.role == "back-office" else f"worker-{self.index}"


@dataclass
class Supervisor:
    config: Config
    port_file: Path | None = None
    metrics_port_file: Path | None = None
    log_level: str = "INFO"
    reload: Callable[[], Config] | None = None
    web_port_file: Path | None = None
    web_port: int = 0
    dicom_port_file: Path | None = None
    dicom_port: int = 0
    children: list[Child] = field(default_factory=list)
    _stopping: bool = False
    _hup: bool = False

    def run(self) -> int:
        # Nothing the daemon writes is for other users (its children inherit this).
        os.umask(0o027)
        data_dir = Path(self.config.data_dir).resolve()
        self.config = dataclasses.replace(self.config, data_dir=str(data_dir))
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(data_dir)
        lock.acquire(wait_s=10.0)
        self._lock_fd = lock.inheritable()
        self.run_dir = _fresh_run_dir(data_dir)
        self._reserved, self.port = ports.reserve(self.config.server.listen)
        # The doors' ports are shared by the workers exactly like the API's.
        doors = []
        if self.config.web.enabled:
            web_reserved, self.web_port = ports.reserve(self.config.web.listen, "web.listen")
            doors.append(web_reserved)
        if self.config.dicom.enabled:
            dicom_reserved, self.dicom_port = ports.reserve(self.config.dicom.listen, "dicom.listen")
            doors.append(dicom_reserved)
        layout.config_file(self.run_dir).write_text(json.dumps(config_module.to_dict(self.config)))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self._start_all()
            self._watch()
        finally:
            self._stop_all()
            for reserved in (self._reserved, *doors):
                reserved.close()
            lock.release()
        log.info("stopped")
        return 0

    # -- start ---------------------------------------------------------------------

    def _start_all(self) -> None:
        back_office = self._spawn("back-office", 0)
        # The workers load their code meanwhile, and get their orders once the back office checked the data dir.
        workers = [self._spawn("worker", i, orders=False)
                   for i in range(1, config_module.serving_processes(self.config) + 1)]
        ready = self._await_ready(back_office)
        for worker in workers:
            self._send_orders(worker)
        for worker in workers:
            self._await_ready(worker)
        if self.metrics_port_file is not None and ready.get("metrics_port"):
            _write_port_file(self.metrics_port_file, int(ready["metrics_port"]))
        host = self.config.server.listen.rpartition(":")[0]
        log.info("pacsvaultd %s serving on %s:%d with %d workers, data in %s", __version__, host, self.port,
                 len(workers), self.config.data_dir)
        if self.web_port:
            log.info("DICOMweb and the share page on port %d", self.web_port)
            if self.web_port_file is not None:
                _write_port_file(self.web_port_file, self.web_port)
        if ready.get("metrics_port"):
            log.info("metrics on http://%s:%d/metrics", self.config.metrics.listen.rpartition(":")[0],
                     ready["metrics_port"])
        if self.dicom_port:
            log.info("DICOM (DIMSE) on %s:%d, AE title %s", self.config.dicom.listen.rpartition(":")[0],
                     self.dicom_port, self.config.dicom.ae_title)
            if self.dicom_port_file is not None:
                _write_port_file(self.dicom_port_file, self.dicom_port)
        if self.port_file is not None:
            _write_port_file(self.port_file, self.port)

    def _spawn(self, role: str, index: int, restarts: int = 0, orders: bool = True) -> Child:
        """Starts a child; ``orders``: send its spec now (else ``_send_orders`` later: it waits for it)."""
        read_end, write_end = os.pipe()
        env = dict(os.environ, **{STATUS_FD: str(write_end),
                                  "PROMETHEUS_MULTIPROC_DIR": str(layout.metrics_dir(self.run_dir))})
        env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)  # an operator's own setting wins
        module = "pacsvault.daemon.processes." + ("back_office" if role == "back-office" else "worker")
        proc = subprocess.Popen([sys.executable, "-m", module, str(index)], stdin=subprocess.PIPE, env=env,
                                pass_fds=(write_end, self._lock_fd))
        os.close(write_end)
        os.set_blocking(read_end, False)
        child = Child(role, index, proc, read_end, time.monotonic(), restarts)
        self.children.append(child)
        self._publish_processes()
        if orders:
            self._send_orders(child)
        return child

    def _send_orders(self, child: Child) -> None:
        spec = {"config": config_module.to_dict(self.config), "run_dir": str(self.run_dir), "index": child.index,
                "port": self.port, "web_port": self.web_port, "dicom_port": self.dicom_port,
                "log_level": self.log_level}
        assert child.proc.stdin is not None
        try:
            child.proc.stdin.write(json.dumps(spec).encode())
            child.proc.stdin.close()
        except BrokenPipeError:
            pass  # it died already; _await_ready reports how

    def _await_ready(self, child: Child) -> dict[str, Any]:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            for report in _read_reports(child):
                if report.get("ready"):
                    return report
                if "error" in report:
                    raise StartFailed(f"{child.name}: {report['error']}", int(report.get("exit", 1)))
            if child.proc.poll() is not None:
                raise StartFailed(f"{child.name} exited with {child.proc.returncode} while starting", 1)
            if self._stopping:
                raise StartFailed("stopped while starting", 0)
            if time.monotonic() > deadline:
                raise StartFailed(f"{child.name} did not start within {_START_TIMEOUT_S:.0f}s", 1)
            time.sleep(0.02)

    # -- watch ---------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping:
            if self._hup:
                self._hup = False
                self._reload()
            for child in list(self.children):
                for _ in _read_reports(child):
                    pass
                if child.proc.poll() is not None:
                    self._restart(child)
            time.sleep(0.1)

    def _restart(self, dead: Child) -> None:
        code = dead.proc.returncode
        self.children.remove(dead)
        os.close(dead.status)
        _mark_metrics_dead(self.run_dir, dead.proc.pid)
        # The first restart is at once; a child that keeps dying soon after it started waits longer each time.
        quick = time.monotonic() - dead.started < _QUICK_DEATH_S
        restarts = dead.restarts + 1 if quick else 0
        delay = min(_MAX_RESTART_DELAY_S, 0.5 * 2 ** (restarts - 1)) if restarts > 1 else 0.0
        log.error("%s (pid %d) exited with %s; starting it again%s", dead.name, dead.proc.pid,
                  _exit_text(code), f" in {delay:.1f}s" if delay else "")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.1)
        if self._stopping:
            return
        child = self._spawn(dead.role, dead.index, restarts)
        try:
            self._await_ready(child)
            log.info("%s is serving again (pid %d)", child.name, child.proc.pid)
        except StartFailed as exc:
            log.error("%s did not start again: %s", child.name, exc)

    def _reload(self) -> None:
        if self.reload is None:
            return
        try:
            fresh = self.reload()
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded: %s", exc)
            return
        fresh = dataclasses.replace(fresh, data_dir=self.config.data_dir)
        layout.config_file(self.run_dir).write_text(json.dumps(config_module.to_dict(fresh)))
        for child in self.children:
            child.proc.send_signal(signal.SIGHUP)

    # -- stop ----------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Workers first (they drain their calls), then the back office."""
        grace = self.config.server.shutdown_grace_s + 10.0
        workers = [c for c in self.children if c.role == "worker"]
        if workers:
            log.info("shutting down: no new calls, %.0fs for in-flight ones", self.config.server.shutdown_grace_s)
        for group in (workers, [c for c in self.children if c.role == "back-office"]):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in group:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.error("%s did not stop within %.0fs; killing it", child.name, grace)
                    child.proc.kill()
                    child.proc.wait()
                os.close(child.status)
        self.children.clear()

    def _on_stop(self, *_: object) -> None:
        self._stopping = True

    def _on_hup(self, *_: object) -> None:
        self._hup = True

    def _publish_processes(self) -> None:
        layout.write_processes(self.run_dir, [("supervisor", os.getpid())]
                               + [(c.name, c.proc.pid) for c in self.children])


# An instance's bytes pass through several buffers of its size (read, decrypted, decompressed, the
# message). Above glibc's default 128 KiB threshold each is a fresh mmap, page-faulted in and unmapped
# again; kept in the heap up to 16 MiB instead, a >= 1 MiB GetInstance costs the worker 3-8% less CPU.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864"


def _fresh_run_dir(data_dir: Path) -> Path:
    run = layout.run_dir(data_dir)
    shutil.rmtree(run, ignore_errors=True)  # sockets and counters of a previous run
    run.mkdir(mode=0o700)
    layout.metrics_dir(run).mkdir(mode=0o700)
    return run


def _read_reports(child: Child) -> list[dict[str, Any]]:
    try:
        chunk = os.read(child.status, 65536)
    except BlockingIOError:
        return []
    except OSError:
        return []
    child.buffer += chunk
    lines, _, child.buffer = child.buffer.rpartition(b"\n")
    return [json.loads(line) for line in lines.split(b"\n") if line.strip()]


def _mark_metrics_dead(run: Path, pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(layout.metrics_dir(run)))


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)
