"""Helpers of the CLI and client tests: the CLI on a real terminal, a patient CD, numbered series."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pydicom
from pydicom.fileset import FileSet
from pydicom.uid import ImplicitVRLittleEndian

from tests.conftest import Daemon, dicom_bytes

ROOT = "1.2.826.0.1.3680043.10.78"


@contextmanager
def paused(daemon: Daemon) -> Iterator[None]:
    """An appliance that stops answering mid-conversation: SIGSTOP to the daemon and every process
    it started (serving workers included), SIGCONT on the way out. Connections stay open."""
    assert daemon.proc is not None
    supervisor = psutil.Process(daemon.proc.pid)
    processes = [supervisor, *supervisor.children(recursive=True)]
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)


@dataclass(frozen=True)
class TerminalRun:
    returncode: int
    stdout: str
    terminal: str  # what a person at the terminal saw on stderr, progress bars included


def run_cli_on_terminal(target: str, *args: str, timeout: float = 120) -> TerminalRun:
    """The CLI with stderr on a pseudo-terminal (as a person sees it) and stdout piped."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    env = dict(os.environ, PACSVAULT_SERVER=target)
    proc = subprocess.Popen([sys.executable, "-m", "pacsvault.client.cli.main", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=terminal, env=env)
    os.close(terminal)
    seen: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO once the child closed its side
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
        os.close(controller)
    return TerminalRun(proc.returncode, out.decode(), b"".join(seen).decode(errors="replace"))


def numbered_series(study: int, series: int, count: int, **attributes: object) -> list[tuple[int, bytes]]:
    """``count`` real CT instances of one series, InstanceNumber 1..count, whose SOP Instance UIDs
    sort the other way round as text (instance 1 is ``...<count>``, instance 10 ``...2`` ...)."""
    made = []
    for n in range(1, count + 1):
        sop = f"{ROOT}.{study}.{series}.{count + 1 - n}"
        made.append((n, dicom_bytes(StudyInstanceUID=f"{ROOT}.{study}", SeriesInstanceUID=f"{ROOT}.{study}.{series}",
                                    SeriesNumber=series, SOPInstanceUID=sop, InstanceNumber=n, **attributes)))
    return made


def sop_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def reencoded_implicit(data: bytes) -> bytes:
    """The same instance (same SOP Instance UID) in Implicit VR Little Endian, as a second copy on a CD."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass(frozen=True)
class PatientCD:
    root: Path
    images: dict[str, bytes]  # SOP Instance UID -> bytes of the copy in the CD's index
    second_copy: Path  # the first image again, in another transfer syntax


def patient_cd(root: Path, patient_id: str = "CD-PAT-1") -> PatientCD:
    """A patient CD as hospitals burn them: a DICOMDIR written by pydicom's FileSet over three
    real images, a README, an autorun file, and one image again in another transfer syntax."""
    images = {}
    file_set = FileSet()
    for n in (1, 2, 3):
        data = dicom_bytes(PatientID=patient_id, StudyInstanceUID=f"{ROOT}.900",
                           SeriesInstanceUID=f"{ROOT}.900.1", SOPInstanceUID=f"{ROOT}.900.1.{n}", InstanceNumber=n)
        images[f"{ROOT}.900.1.{n}"] = data
        file_set.add(pydicom.dcmread(io.BytesIO(data)))
    file_set.write(root)
    (root / "README.TXT").write_text("Images of CD-PAT-1. Open VIEWER.EXE to look at them.\r\n")
    (root / "AUTORUN.INF").write_text("[autorun]\r\nopen=VIEWER.EXE\r\n")
    second = root / "EXTRA" / "IM_IMPL"
    second.parent.mkdir()
    second.write_bytes(reencoded_implicit(images[f"{ROOT}.900.1.1"]))
    return PatientCD(root, images, second)
