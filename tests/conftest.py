"""Shared fixtures: real pacsvaultd processes on loopback, real DICOM corpora."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from tests import ceph_cluster
from tests.ceph_cluster import CephCluster

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
# Serving processes of every daemon a test starts: CI runs the suite as appliances run (several).
WORKERS = os.environ.get("PACSVAULT_TEST_WORKERS", "2")


class Daemon:
    """One pacsvaultd subprocess with its own data dir and port."""

    def __init__(self, data_dir: Path, config: Path | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.extra = extra or []
        self.env = env  # the daemon's whole environment (e.g. S3 credentials); None: the test's
        self.port_file = data_dir.parent / f"{data_dir.name}.port"
        # Metrics on a free port too, so daemons never fight over 9464.
        self.metrics_port_file = data_dir.parent / f"{data_dir.name}.metrics-port"
        self.metrics_port = 0
        # DICOMweb on a free port too (the default 8080 would be shared by every daemon).
        self.web_port_file = data_dir.parent / f"{data_dir.name}.web-port"
        self.web_port = 0
        # The DIMSE door, on a free loopback port too.
        self.dicom_port_file = data_dir.parent / f"{data_dir.name}.dicom-port"
        self.dicom_port = 0
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Daemon:
        self.port_file.unlink(missing_ok=True)
        self.metrics_port_file.unlink(missing_ok=True)
        self.web_port_file.unlink(missing_ok=True)
        self.dicom_port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "pacsvault.daemon", "--listen", "127.0.0.1:0",
                "--data-dir", str(self.data_dir), "--port-file", str(self.port_file),
                "--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(self.metrics_port_file),
                "--web-listen", "127.0.0.1:0", "--web-port-file", str(self.web_port_file),
                "--dicom-listen", "127.0.0.1:0", "--dicom-port-file", str(self.dicom_port_file),
                "--workers", WORKERS, *self.extra]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"pacsvaultd exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pacsvaultd did not start in {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        if self.metrics_port_file.exists():  # absent when [metrics] enabled = false
            self.metrics_port = int(self.metrics_port_file.read_text())
        if self.web_port_file.exists():  # absent when [web] enabled = false
            self.web_port = int(self.web_port_file.read_text())
        if self.dicom_port_file.exists():  # absent when [dicom] enabled = false
            self.dicom_port = int(self.dicom_port_file.read_text())
        return self

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def client(self, **kwargs: object) -> PacsvaultClient:
        return PacsvaultClient(self.target, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signals the daemon and waits for it; a SIGTERM stop must be clean: the supervisor
        never had to kill a process of its own that did not stop in its grace period."""
        assert self.proc is not None
        if self.proc.poll() is None:
            logged_before = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
            if sig == signal.SIGTERM:
                with open(self.log_path, "rb") as log:
                    log.seek(logged_before)
                    during_stop = log.read().decode(errors="replace")
                assert "did not stop within" not in during_stop, during_stop[-4000:]
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def start_together(*daemons: Daemon) -> None:
    """Starts a pair's two sites at once, as after a power cut at both, then waits until each has
    checked its audit trail's tail against the other, its witness: the first try at start found
    the other not listening yet, and checkpoints wait for that check (retried in the background)."""
    logged_before = [len(daemon.log()) for daemon in daemons]  # a restart: earlier starts' lines do not count
    with ThreadPoolExecutor(len(daemons)) as pool:
        for started in [pool.submit(daemon.start) for daemon in daemons]:
            started.result()
    deadline = time.monotonic() + 30
    for daemon, before in zip(daemons, logged_before, strict=True):
        while "not checked against the witness yet" in (since := daemon.log()[before:]) and \
                "tail checked against the witness" not in since:
            assert time.monotonic() < deadline, since[-3000:]
            time.sleep(0.05)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator:
    started: list[Daemon] = []

    def make(name: str = "appliance", config: Path | None = None, extra: list[str] | None = None,
             start: bool = True, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(tmp_path / name, config, extra, env)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in started:
        if daemon.alive:
            daemon.kill()


@pytest.fixture
def daemon(daemon_factory) -> Daemon:  # type: ignore[no-untyped-def]
    return daemon_factory()


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    """48 instances: 4 patients x 2 studies x 2 series x 3 instances, mixed modalities."""
    out = tmp_path_factory.mktemp("corpus")
    return corpus_module.generate(out, patients=4, studies_per_patient=2, series_per_study=2,
                                  instances_per_series=3, seed=7)


def pydicom_file(name: str) -> bytes:
    return source_file(name).read_bytes()


def run_cli(target: str, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PACSVAULT_SERVER=target)
    return subprocess.run([sys.executable, "-m", "pacsvault.client.cli.main", *args],
                          capture_output=True, text=True, env=env, check=check, timeout=300)


def source_file(name: str) -> Path:
    """A real DICOM file from pydicom or pydicom-data."""
    for root in corpus_module.source_roots():
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(name)


def dicom_bytes(source: str = "CT_small.dcm", **attributes: object) -> bytes:
    """A real pydicom test file with some attributes replaced (None deletes one).

    SOPInstanceUID also updates the file meta, as a real writer would.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(source_file(source))
        for keyword, value in attributes.items():
            if value is None:
                delattr(dataset, keyword)
            else:
                setattr(dataset, keyword, value)
        if isinstance(attributes.get("SOPInstanceUID"), str):
            dataset.file_meta.MediaStorageSOPInstanceUID = attributes["SOPInstanceUID"]
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def identity(n: int, root: str = "1.2.826.0.1.3680043.10.77") -> dict[str, str]:
    """Distinct, valid study / series / instance UIDs for the n-th test instance."""
    return {"StudyInstanceUID": f"{root}.{n}", "SeriesInstanceUID": f"{root}.{n}.1",
            "SOPInstanceUID": f"{root}.{n}.1.1"}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator:
    """Mounts small real filesystems (tmpfs) for tests of full or vanishing disks."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                           check=True, capture_output=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.fail(f"this test needs root to mount a tmpfs (CI runs as root): {exc}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephCluster]:
    """A real single-node Ceph (monitor, manager, memstore OSD, RADOS Gateway) on loopback, one per session."""
    missing = ceph_cluster.missing_tools()
    if missing:
        pytest.fail(f"the object-store tests need a real Ceph: missing {', '.join(missing)} "
                    f"({ceph_cluster.INSTALL_HINT}; .ci/run installs them)", pytrace=False)
    cluster = CephCluster(ceph_cluster.short_temp_dir())
    try:
        cluster.start()
    except ceph_cluster.CephError as exc:
        pytest.fail(f"the test Ceph cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
