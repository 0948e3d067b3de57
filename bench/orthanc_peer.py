"""Orthanc, the peer of the side-by-side: installed from Debian if missing, run on loopback only.

The packaged system service is never used: if it runs it is stopped (and
disabled where systemctl can), and the benchmark starts its own Orthanc
process with its own JSON config, storage folder and temp folder under the
work dir. Orthanc 1.10 has no option for its HTTP bind address (CivetWeb is
given a bare port and binds 0.0.0.0), so it is started with a tiny LD_PRELOAD
shim, compiled here, that turns a bind() to the wildcard address into one to
loopback; the listening sockets are then checked, and the run refuses to go
on if any of them is not on loopback. RemoteAccessAllowed is false as well.

Fairness, what is set and why (see bench/README.md "side_by_side.py"):
  StorageCompression false (the packaged default; pacsvault compresses with
  zstd, so pacsvault pays compression CPU that Orthanc does not),
  SyncStorageArea true (fsync of every stored file before the answer, the
  packaged default), StorageAccessOnFind "Never" (find answers from the
  SQLite index only, its fastest mode), KeepAlive + TcpNoDelay true,
  HttpCompressionEnabled false, no plugins, DICOM server off, no auth on
  loopback. Orthanc's SQLite index runs WAL with PRAGMA SYNCHRONOUS=NORMAL
  (hard-coded, not configurable): its index commit is not fsynced per
  instance, pacsvault's LMDB commit is. That favours Orthanc.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
PACKAGE = "orthanc"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* bind() to the wildcard address becomes bind() to loopback: Orthanc 1.10
   cannot be told where to listen, and the benchmark must not open a port
   on the machine's network. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr) == 0) {
            a.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
"""


@dataclass
class Orthanc:
    proc: subprocess.Popen[bytes]
    port: int
    work_dir: Path
    config: dict
    log_path: Path
    version: str
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def storage_dir(self) -> Path:
        return Path(self.config["StorageDirectory"])

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# -- installation and the packaged service --------------------------------

def package_version() -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", PACKAGE],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or "install ok installed" not in done.stdout:
        return None
    return done.stdout.split("|", 1)[1]


def ensure_installed(log) -> tuple[str, list[str]]:
    """Installs the Debian package if missing; stops its service. Returns (version, notes)."""
    notes: list[str] = []
    version = package_version()
    if version is None or not ORTHANC_BIN.exists():
        log("orthanc is not installed: apt-get install -y orthanc")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        prefix: list[str] = []
        if os.geteuid() != 0:
            if not shutil.which("sudo"):
                raise SystemExit("orthanc is missing and this is not root: run `sudo apt-get install -y orthanc`")
            prefix = ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"]
        install = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run([*prefix, "apt-get", "update"], env=env, check=False)  # stale package lists
            subprocess.run(install, env=env, check=True)
        version = package_version()
        notes.append(f"installed orthanc {version} from the Debian archive")
    notes += stop_packaged_service()
    return version or "?", notes


def stop_packaged_service() -> list[str]:
    """The packaged service must not run (it would listen on 8042/4242 on every interface)."""
    notes = []
    pid = _service_pid()
    if pid is not None:
        subprocess.run(["service", PACKAGE, "stop"], capture_output=True, check=False)
        for _ in range(50):
            if not psutil.pid_exists(pid):
                break
            time.sleep(0.1)
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGTERM)  # that one process, from its pid file
        notes.append(f"stopped the packaged orthanc service (pid {pid})")
    if shutil.which("systemctl"):
        # Works without a running systemd: it only removes the enablement symlink.
        done = subprocess.run(["systemctl", "disable", PACKAGE], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            notes.append("packaged orthanc service disabled (systemctl disable orthanc)")
    return notes


def _service_pid() -> int | None:
    pid_file = Path("/run/orthanc.pid")
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        return pid if psutil.Process(pid).name().lower().startswith("orthanc") else None
    except psutil.Error:
        return None


# -- our own Orthanc process -----------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(work_dir: Path, port: int, extra: dict | None = None) -> dict:
    storage = work_dir / "storage"
    return {
        "Name": "pacsvault-bench-peer",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "TemporaryDirectory": str(work_dir / "tmp"),
        # Packaged defaults, set explicitly because the comparison depends on them.
        "StorageCompression": False,
        "SyncStorageArea": True,
        "StoreMD5ForAttachments": True,
        "MaximumStorageCacheSize": 128,
        "OverwriteInstances": False,
        # Loopback only, no authentication there, nothing else listening.
        "HttpServerEnabled": True,
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "DicomServerEnabled": False,
        "WebDavEnabled": False,
        "OrthancExplorerEnabled": False,
        "Plugins": [],
        "LuaScripts": [],
        # Tuned for speed, as a careful operator would.
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpThreadsCount": 50,
        "HttpCompressionEnabled": False,
        "StorageAccessOnFind": "Never",
        "SaveJobs": False,
    } | (extra or {})


def _build_shim(work_dir: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise SystemExit("a C compiler (cc) is needed to keep Orthanc on loopback: apt-get install -y gcc")
    source, lib = work_dir / "loopback_bind.c", work_dir / "loopback_bind.so"
    source.write_text(_SHIM_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source), "-ldl"], check=True)
    return lib


def with_dicom(config: dict, dicom_port: int) -> dict:
    """Orthanc's C-STORE SCP on (loopback, through the shim) ``dicom_port``, AE title ORTHANC: every storage
    SOP class and transfer syntax accepted (its defaults), any calling AE, PDUs as large as dcmtk sends."""
    return {**config, "DicomServerEnabled": True, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": False, "DicomCheckModalityHost": False, "DicomAlwaysAllowStore": True,
            "MaximumPduLength": 131072, "DicomThreadsCount": 4}


@contextmanager
def running_orthanc(work_dir: Path, version: str, extra: dict | None = None,
                    dicom_port: int | None = None) -> Iterator[Orthanc]:
    """Orthanc on loopback. ``extra``: config keys over the bench's (the DICOMweb plugin for
    bench/dicomweb.py); with ``dicom_port`` its DICOM server too (see ``with_dicom``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "tmp").mkdir(exist_ok=True)
    port = free_port()
    config = bench_config(work_dir, port, extra)
    if dicom_port is not None:
        config = with_dicom(config, dicom_port)
    config_path = work_dir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = work_dir / "orthanc.log"
    env = {**os.environ, "LD_PRELOAD": str(_build_shim(work_dir))}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(ORTHANC_BIN), str(config_path)], stdout=log, stderr=log, env=env,
                                cwd=work_dir)
    orthanc = Orthanc(proc, port, work_dir, config, log_path, version)
    try:
        _wait_ready(orthanc)
        _check_loopback_only(orthanc)
        yield orthanc
    finally:
        _stop(orthanc)


def _wait_ready(orthanc: Orthanc) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if orthanc.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {orthanc.proc.returncode}:\n{orthanc.log_tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", orthanc.port, timeout=2)
            conn.request("GET", "/system")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200:
                orthanc.notes.append(f"Orthanc /system: {json.loads(body).get('Version')}")
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Orthanc not answering after {START_TIMEOUT_S}s:\n{orthanc.log_tail()}")
        time.sleep(0.1)


def _check_loopback_only(orthanc: Orthanc) -> None:
    listening = [c.laddr for c in psutil.Process(orthanc.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    public = [f"{a.ip}:{a.port}" for a in listening if a.ip not in ("127.0.0.1", "::1")]
    if public or not listening:
        raise RuntimeError(f"Orthanc listens beyond loopback ({public or 'nothing found'}); refusing to go on")
    orthanc.notes.append("Orthanc listens on " + ", ".join(f"{a.ip}:{a.port}" for a in listening))


def _stop(orthanc: Orthanc) -> None:
    if orthanc.proc.poll() is not None:
        orthanc.exit_code = orthanc.proc.returncode
        return
    orthanc.proc.send_signal(signal.SIGTERM)
    try:
        orthanc.exit_code = orthanc.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        orthanc.proc.kill()
        orthanc.exit_code = orthanc.proc.wait()
        orthanc.notes.append("Orthanc ignored SIGTERM and was killed")


# -- a keep-alive HTTP client, one connection per thread ---------------------

class HttpPool:
    """One persistent HTTP/1.1 connection per thread, with TCP_NODELAY, like gRPC's channel."""

    def __init__(self, port: int, timeout: float = 300.0) -> None:
        self.port, self.timeout = port, timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json", accept: str | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept is not None:
            headers["Accept"] = accept
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, payload: object | None = None) -> object:
        status, body = self.request(method, path, None if payload is None else json.dumps(payload).encode())
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
