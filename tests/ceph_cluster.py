"""A real single-node Ceph for tests: one monitor, one manager, one memstore OSD, one RADOS Gateway.

Debian 12's Ceph 16.2 packages (``ceph-mon ceph-osd ceph-mgr radosgw
ceph-common``) run here as plain foreground processes on 127.0.0.1, in one
temporary folder, with no containers and no systemd; a cluster comes up in a
few seconds and is stopped by the PIDs it started. The OSD keeps its objects
in memory (memstore), so nothing outlives the cluster.

The settings that matter, and why:

- ``public addr`` / ``cluster addr`` 127.0.0.1: else the OSD and the manager
  bind every interface;
- one replica (``osd pool default size = 1``, ``mon allow pool size one``,
  ``osd crush chooseleaf type = 0``): one OSD must be enough for every pool;
- ``paxos propose interval = 0.05``: the default 1 s makes start-up take 13 s;
- ``rgw enable lc threads = false``: the gateway stops at once on SIGTERM;
- ``tcp_nodelay=1`` on the beast frontend: without it every response whose
  body is not a whole number of 64 KiB chunks waits 40 ms (Nagle against the
  client's delayed ACK; measured: a 30 kB GET 44 ms, with it 1.8 ms), and a
  real gateway in front of pacsvault needs it as much;
- ``mon data avail warn = 1``: a busy shared disk is no health warning here.

The gateway can be stopped, paused and started again alone, for tests of an
object store that goes away or stops answering in the middle of work.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from pacsvault.daemon.replication.certs import issue_cert, make_ca
from tests.ports import free_port

TOOLS = ("ceph-authtool", "monmaptool", "ceph-mon", "ceph-mgr", "ceph-osd", "radosgw", "radosgw-admin", "ceph")
INSTALL_HINT = "apt-get install -y ceph-mon ceph-osd ceph-mgr radosgw ceph-common"
# Every wait is bounded: a cluster that is not up by then is reported with its logs.
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0
RGW_NAME = "client.rgw.test"


def missing_tools() -> list[str]:
    """The Ceph programs this machine lacks, by name."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]



class CephError(RuntimeError):
    """The test cluster did not start or a command against it failed; the message has the log tail."""


@dataclass(frozen=True)
class S3User:
    uid: str
    access_key: str
    secret_key: str


class CephCluster:
    """One Ceph cluster of plain processes under ``root`` (short: admin sockets are AF_UNIX paths)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "ceph.conf"
        self.keyring = root / "keyring"
        self.mon_ports = (free_port(), free_port())  # v2, v1
        self.rgw_port = free_port()
        self.rgw_tls_port = free_port()
        self.ca_file = root / "ca.pem"  # the CA of the gateway's TLS endpoint
        self.fsid = str(uuid.uuid4())
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin: S3User | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    @property
    def tls_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.rgw_tls_port}"

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> CephCluster:
        missing = missing_tools()
        if missing:
            raise CephError(f"Ceph is not installed here: missing {', '.join(missing)} ({INSTALL_HINT})")
        try:
            self._write_config()
            self._write_tls_files()
            self._start_monitor()
            self._start_manager()
            self._start_osd()
            self._create_gateway_key()
            self.start_gateway()
            self.admin = self.create_user("pacsvault-test")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops every process this cluster started, newest first, by PID."""
        for name in reversed(list(self._procs)):
            _terminate(self._procs.pop(name))

    def stop_gateway(self) -> None:
        proc = self._procs.pop("rgw", None)
        if proc is not None:
            _terminate(proc)

    def start_gateway(self) -> None:
        """Starts the RADOS Gateway and waits until it answers HTTP."""
        if "rgw" in self._procs:
            return
        self._spawn("rgw", ["radosgw", "-n", RGW_NAME, "--keyring", str(self.root / "rgw.keyring")])
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._gateway_answers():
            self._check_alive("rgw", deadline, "the RADOS Gateway did not answer HTTP")
            time.sleep(0.05)

    def pause_gateway(self) -> None:
        """SIGSTOP: the gateway keeps its port open (the kernel still accepts) but answers nothing."""
        self._procs["rgw"].send_signal(signal.SIGSTOP)

    def resume_gateway(self) -> None:
        self._procs["rgw"].send_signal(signal.SIGCONT)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items()}

    # -- commands ---------------------------------------------------------------------------------

    def ceph(self, *args: str) -> str:
        return self._run("ceph", *args)

    def create_user(self, uid: str) -> S3User:
        out = self._run("radosgw-admin", "user", "create", f"--uid={uid}", f"--display-name={uid}")
        key = json.loads(out)["keys"][0]
        return S3User(uid, key["access_key"], key["secret_key"])

    def log_tail(self, name: str, lines: int = 30) -> str:
        texts = []
        for path in sorted((self.root / "log").glob("*")):
            if name in path.name:
                texts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)

    # -- the steps --------------------------------------------------------------------------------

    def _write_config(self) -> None:
        for sub in ("mon", "mgr", "osd", "run", "log", "rgw"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        v2, v1 = self.mon_ports
        r = self.root
        self.conf.write_text(f"""\
[global]
fsid = {self.fsid}
mon host = [v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
keyring = {self.keyring}
run dir = {r}/run
admin socket = {r}/run/$name.asok
log file = {r}/log/$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
paxos propose interval = 0.05
mon data avail warn = 1
mon data = {r}/mon/$cluster-$id
mgr data = {r}/mgr/$cluster-$id
osd data = {r}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {4 << 30}

[osd]
keyring = {r}/osd/$cluster-$id/keyring

[{RGW_NAME}]
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port} ssl_endpoint=127.0.0.1:{self.rgw_tls_port} \
ssl_certificate={r}/rgw.crt ssl_private_key={r}/rgw.key tcp_nodelay=1
rgw data = {r}/rgw
rgw enable lc threads = false
""")

    def _write_tls_files(self) -> None:
        """A test CA and a certificate for 127.0.0.1, so a client's CA file and TLS checks are tested."""
        ca = make_ca("pacsvault test object store CA")
        server = issue_cert(ca, "rados-gateway", ip_addresses=["127.0.0.1"], dns_names=["localhost"])
        self.ca_file.write_bytes(ca.cert_pem())
        (self.root / "rgw.crt").write_bytes(server.cert_pem())
        key = self.root / "rgw.key"
        key.write_bytes(server.key_pem())
        key.chmod(0o600)

    def _start_monitor(self) -> None:
        self._tool("ceph-authtool", "--create-keyring", str(self.keyring), "--gen-key", "-n", "mon.",
                   "--cap", "mon", "allow *")
        self._tool("ceph-authtool", str(self.keyring), "--gen-key", "-n", "client.admin",
                   "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *")
        v2, v1 = self.mon_ports
        monmap = self.root / "monmap"
        self._tool("monmaptool", "--create", "--fsid", self.fsid,
                   "--addv", "a", f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]", str(monmap))
        self._tool("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
                   "--keyring", str(self.keyring))
        self._spawn("mon", ["ceph-mon", "-i", "a"])
        self._wait_for("mon", lambda: self._quiet_ok("ceph", "mon", "stat"), "the monitor did not form a quorum")

    def _start_manager(self) -> None:
        keyring = self.root / "mgr.keyring"
        keyring.write_text(self.ceph("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr",
                                     "osd", "allow *"))
        self._spawn("mgr", ["ceph-mgr", "-i", "x", "--keyring", str(keyring)])

    def _start_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        secret = self._tool("ceph-authtool", "--gen-print-key").strip()
        secrets = self.root / "osd-secrets.json"
        secrets.write_text(json.dumps({"cephx_secret": secret}))
        # `osd new` with a secret also creates the OSD's cephx identity with the usual caps.
        osd_id = self.ceph("osd", "new", osd_uuid, "-i", str(secrets)).strip()
        data = self.root / "osd" / f"ceph-{osd_id}"
        data.mkdir(parents=True, exist_ok=True)
        (data / "keyring").write_text(f"[osd.{osd_id}]\n\tkey = {secret}\n")
        self._tool("ceph-osd", "-c", str(self.conf), "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._spawn("osd", ["ceph-osd", "-i", osd_id])

        def osd_up() -> bool:
            return bool(json.loads(self.ceph("osd", "stat", "-f", "json")).get("num_up_osds") == 1)
        self._wait_for("osd", osd_up, "the OSD did not come up")

    def _create_gateway_key(self) -> None:
        # The gateway creates its pools itself at first start: it needs to write the OSD map.
        (self.root / "rgw.keyring").write_text(self.ceph("auth", "get-or-create", RGW_NAME,
                                                         "mon", "allow rw", "osd", "allow rwx"))

    # -- plumbing ---------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._procs[name] = subprocess.Popen([*argv, "-f", "-c", str(self.conf)], stdout=log,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def _wait_for(self, name: str, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():  # type: ignore[operator]
            self._check_alive(name, deadline, what)
            time.sleep(0.05)

    def _check_alive(self, name: str, deadline: float, what: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            raise CephError(f"{what}: {name} exited with {proc.returncode}\n{self.log_tail(name)}")
        if time.monotonic() > deadline:
            raise CephError(f"{what} within {START_TIMEOUT_S:.0f}s\n{self.log_tail(name)}")

    def _gateway_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _quiet_ok(self, *argv: str) -> bool:
        done = subprocess.run([*argv, "-c", str(self.conf), "--connect-timeout", "2"], capture_output=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
        return done.returncode == 0

    def _run(self, *argv: str) -> str:
        return self._tool(*argv, "-c", str(self.conf))

    def _tool(self, *argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CephError(f"{' '.join(argv[:4])} did not finish in {COMMAND_TIMEOUT_S:.0f}s") from exc
        if done.returncode != 0:
            raise CephError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()


def _terminate(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def short_temp_dir() -> Path:
    """A fresh folder under /tmp: Unix socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="pvceph-", dir="/tmp"))


if __name__ == "__main__":  # python tests/ceph_cluster.py: start, time, stop
    started = time.monotonic()
    cluster = CephCluster(short_temp_dir()).start()
    print(f"up in {time.monotonic() - started:.1f}s at {cluster.endpoint}, pids {cluster.pids()}")
    began = time.monotonic()
    cluster.stop()
    print(f"stopped in {time.monotonic() - began:.1f}s")
    shutil.rmtree(cluster.root)
