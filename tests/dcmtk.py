"""Running Debian's dcmtk tools against a daemon: clients nobody here wrote.

``storescp`` (a C-MOVE destination) cannot be told where to listen, so it
runs under the LD_PRELOAD shim bench/orthanc_peer.py builds for Orthanc,
which turns a bind to the wildcard address into one to loopback; the test
checks the listening socket is on loopback before it goes on.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pydicom
import pytest

from pacsvault.client import dcmtk_profile
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
# getscu proposes the uncompressed transfer syntaxes plus one it "prefers": the flag for each stored one.
GETSCU_PREFER = {"1.2.840.10008.1.2": "+xi", "1.2.840.10008.1.2.1": "+xe", "1.2.840.10008.1.2.2": "+xb",
                 "1.2.840.10008.1.2.5": "+xr", "1.2.840.10008.1.2.4.50": "+xy", "1.2.840.10008.1.2.4.51": "+xx",
                 "1.2.840.10008.1.2.4.70": "+xs", "1.2.840.10008.1.2.4.90": "+xv", "1.2.840.10008.1.2.4.91": "+xw",
                 "1.2.840.10008.1.2.4.80": "+xt", "1.2.840.10008.1.2.4.81": "+xu"}


def require_dcmtk() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the DIMSE interoperability tests need Debian's dcmtk (missing {', '.join(missing)}; "
                    "apt-get install -y dcmtk; .ci/run installs it)", pytrace=False)


def run(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout, check=False)


def store(port: int, paths: list[Path], work: Path, calling_ae: str = "MODALITY",
          extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """storescu of every file over one association, each proposed in its own transfer syntax."""
    config = work / "storescu.cfg"
    config.write_text(dcmtk_profile.profile(dcmtk_profile.kinds(paths)))
    return run("storescu", "--config-file", str(config), dcmtk_profile.PROFILE, "-aet", calling_ae,
               "-aec", "PACSVAULT", *extra, "127.0.0.1", str(port), *map(str, paths), timeout=300)


def find(port: int, model: str, keys: dict[str, str], out: Path, calling_ae: str = "VIEWER") -> list[pydicom.Dataset]:
    """findscu's answers, extracted to files (-X) and read back."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [model, "-X", "-od", str(out), "-aet", calling_ae, "-aec", "PACSVAULT"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value is not None else key]
    done = run("findscu", *args, "127.0.0.1", str(port))
    assert done.returncode == 0, done.stdout + done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]



def _shim(work: Path) -> Path:
    spec = importlib.util.spec_from_file_location("orthanc_peer", ROOT / "bench" / "orthanc_peer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("orthanc_peer", module)  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module._build_shim(work)  # type: ignore[no-any-return]


@contextmanager
def storescp(work: Path, ae_title: str = "DEST") -> Iterator[tuple[int, Path]]:
    """A dcmtk Storage SCP on loopback accepting every transfer syntax and writing what it receives
    bit for bit (+B); yields (port, its folder)."""
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "received"
    folder.mkdir(exist_ok=True)
    port = free_port()
    log = (work / "storescp.log").open("wb")
    proc = subprocess.Popen(["storescp", "-aet", ae_title, "+xa", "+B", "-od", str(folder), str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={"LD_PRELOAD": str(_shim(work)),
                                                                       "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 20
        while True:
            listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN]
            if listening:
                break
            assert proc.poll() is None and time.monotonic() < deadline, (work / "storescp.log").read_text()
            time.sleep(0.05)
        assert all(a.ip == "127.0.0.1" for a in listening), listening  # never beyond loopback
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
