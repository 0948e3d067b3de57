"""The pair playbook against real Debian 12 targets: converge, converge again, serve.

Two debootstrap roots stand in for site A and site B and are driven through
Ansible's chroot connection (community.general.chroot), exactly as the
playbook drives a real appliance over SSH, with two differences: systemd
cannot run in a chroot, so the inventory sets
``pacsvault_appliance_manage_service: false`` and the unit is checked with
``systemd-analyze verify``, and the daemon is started by hand from the
provisioned files, as the unit would start it, until grpc.health.v1 says
SERVING. Site A also gets a real volume: a loop device the role formats and
mounts as its capacity tier. The two provisioned daemons then run together
and replicate: a DICOM file stored on site A reaches site B, erasure-coded,
over mutual TLS with the certificates the role made with pacsvault's helper.
The chroots share the host's network, so the inventory gives each site its
own loopback replication port and 127.0.0.1 as its replication address.
Each daemon makes its own encryption keyring in the role's keyring folder at
first start; site B is then rebuilt with its keyring given back, vault-encrypted,
through pacsvault_appliance_keyring_src (and refuses another appliance's).

Needs root, debootstrap and network access to the Debian mirror; a cold run
(debootstrap) takes a few minutes more, a warm one about four. Missing
prerequisites fail the test; ``PACSVAULT_SKIP_SLOW=1`` skips it instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydicom
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import debian_target
from debian_target import Namespace, NetNamespace, Target
from tests.ceph_cluster import CephCluster
from tests.s3_support import new_bucket, plain_client
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
SITES = ("site-a", "site-b")
# A real DICOM file (pydicom's own test data) to store on site A.
DICOM_FILE = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
# Where the role keeps each appliance's keyring: off the data disks, the daemon user's.
KEY_DIR = "/var/lib/pacsvault-keys"
KEYRING = f"{KEY_DIR}/keyring.json"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Pair:
    def __init__(self, work: Path, ns: Namespace, targets: dict[str, Target], wheelhouse: Path) -> None:
        self.work = work
        self.ns = ns
        self.targets = targets
        self.wheelhouse = wheelhouse
        self.capacity_disk = ""
        self.dirty_disk = ""
        # Each site's peer listener on its own loopback port (one network for both roots).
        self.replication_ports = {site: free_port() for site in SITES}
        # For keyrings given to the role vault-encrypted, as a field engineer would.
        self.vault_password_file = work / "vault-password"

    def inventory(self, name: str, extra: dict[str, dict[str, object]] | None = None) -> Path:
        hosts: dict[str, dict[str, object]] = {}
        for site, target in self.targets.items():
            peer = next(s for s in SITES if s != site)
            hosts[site] = {
                "ansible_connection": "community.general.chroot",
                "ansible_host": str(target.root),
                "ansible_python_interpreter": "/usr/bin/python3",
                "pacsvault_appliance_site": site,
                "pacsvault_appliance_peer": peer,
                # The peer dials 127.0.0.1:<this site's port>; the certificate has 127.0.0.1.
                "pacsvault_appliance_replication_address": "127.0.0.1",
                "pacsvault_appliance_replication_listen": f"127.0.0.1:{self.replication_ports[site]}",
                **(extra or {}).get(site, {}),
            }
        hosts["site-a"].setdefault("pacsvault_appliance_manage_volumes", True)
        hosts["site-a"].setdefault("pacsvault_appliance_volumes", [{
            "name": "capacity", "devices": [self.capacity_disk], "fstype": "ext4",
            "mount_point": "/srv/pacsvault/capacity",
        }])
        group = {
            "pacsvault_appliance_pair": "test-pair",
            "pacsvault_appliance_wheelhouse": str(self.wheelhouse),
            "pacsvault_appliance_pki_dir": str(self.work / "pki"),
            "pacsvault_appliance_manage_service": False,
            # Passed through to [replication]: a quick sender and short backoff for the test.
            "pacsvault_appliance_config": {"replication": {"sender_interval_s": 0.2, "max_backoff_s": 1.0}},
            "pacsvault_appliance_tiers": [
                {"name": "hot", "volumes": ["/srv/pacsvault/hot"], "volume_class": "ssd",
                 "reserve_bytes": 1048576},
                {"name": "capacity", "volumes": ["/srv/pacsvault/capacity"], "volume_class": "hdd",
                 "reserve_bytes": 1048576},
            ],
        }
        path = self.work / f"{name}.json"
        path.write_text(json.dumps({"pacsvault_pair": {"hosts": hosts, "vars": group}}, indent=1))
        return path

    def play(self, inventory: Path, label: str, *args: str) -> subprocess.CompletedProcess[str]:
        # JSON results keep messages on one line for the assertions below.
        env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
                   PATH=f"{BIN}:{os.environ['PATH']}")
        if self.vault_password_file.exists():
            env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(self.vault_password_file)
        argv = self.ns.command(str(BIN / "ansible-playbook"), "-i", str(inventory),
                               str(ANSIBLE_DIR / "pacsvault-pair.yml"), *args)
        started = time.monotonic()
        result = subprocess.run(argv, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=600)
        log = self.work / f"{label}.log"
        log.write_text(result.stdout + result.stderr)
        print(f"{label}: rc={result.returncode} in {time.monotonic() - started:.0f}s, log {log}")
        return result


def recap(output: str) -> dict[str, dict[str, int]]:
    return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
            for m in RECAP.finditer(output)}


def tail(result: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if os.environ.get("PACSVAULT_SKIP_SLOW") == "1":
        pytest.skip("PACSVAULT_SKIP_SLOW=1: the real-target Ansible test is skipped")
    problems = debian_target.missing_prerequisites()
    if problems:
        pytest.fail("the real-target Ansible test cannot run: " + "; ".join(problems)
                    + ". Set PACSVAULT_SKIP_SLOW=1 to skip it on purpose.", pytrace=False)
    with debian_target.exclusive():
        yield from _converged_pair(tmp_path_factory.mktemp("ansible-pair"))


def _converged_pair(work: Path) -> Iterator[Pair]:
    debian_target.ensure_base(work / "debootstrap.log")
    wheelhouse = work / "wheelhouse"
    subprocess.run([str(ANSIBLE_DIR / "build-wheelhouse.sh"), str(wheelhouse)], check=True, timeout=600,
                   env=dict(os.environ, PYTHON=sys.executable))
    ns = Namespace()
    targets: dict[str, Target] = {}
    try:
        for site in SITES:
            targets[site] = Target(site, work / site, ns)
        pair = Pair(work, ns, targets, wheelhouse)
        pair.capacity_disk = targets["site-a"].attach_disk(work / "capacity.img", 128)
        pair.dirty_disk = targets["site-a"].attach_disk(work / "dirty.img", 16)
        # A disk that holds something (here swap): safe mode must leave it alone.
        subprocess.run(["mkswap", pair.dirty_disk], check=True, capture_output=True)
        first = pair.play(pair.inventory("inventory"), "converge-1")
        assert first.returncode == 0, f"first converge failed:\n{tail(first)}"
        yield pair
    finally:
        ns.close()
        for target in targets.values():
            target.detach()
        for site in SITES:
            shutil.rmtree(work / site, ignore_errors=True)


def test_second_converge_changes_nothing(pair: Pair) -> None:
    result = pair.play(pair.inventory("inventory"), "converge-2")
    assert result.returncode == 0, tail(result)
    counts = recap(result.stdout)
    assert set(counts) == set(SITES), result.stdout[-2000:]
    changed = {site: c["changed"] for site, c in counts.items()}
    assert changed == {"site-a": 0, "site-b": 0}, f"not idempotent:\n{tail(result, 120)}"


def test_provisioned_daemon_serves_health(pair: Pair) -> None:
    for site, target in pair.targets.items():
        port = _start_daemon(pair, target)
        try:
            # The provisioned helper, run inside the appliance root ...
            helper = subprocess.run(
                pair.ns.command("chroot", str(target.root), "/opt/pacsvault/venv/bin/python",
                                "/opt/pacsvault/libexec/pacsvault-wait-serving",
                                "--server", f"127.0.0.1:{port}", "--timeout", "30"),
                capture_output=True, text=True, timeout=60,
            )
            assert helper.returncode == 0, f"{site}: {helper.stdout}{helper.stderr}"
            # ... and an independent grpc.health.v1 client from outside.
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, site
        finally:
            _stop_daemon(target)
    # The data landed where the config says, on the mounted capacity volume for site A.
    site_a = pair.targets["site-a"]
    assert (site_a.path("/var/lib/pacsvault/index")).is_dir()
    mounts = subprocess.run(pair.ns.command("findmnt", "--noheadings", "--output", "SOURCE,FSTYPE",
                                            str(site_a.path("/srv/pacsvault/capacity"))),
                            capture_output=True, text=True, check=True).stdout.split()
    assert mounts == [pair.capacity_disk, "ext4"]


def test_provisioned_pair_replicates(pair: Pair) -> None:
    a, b = pair.targets["site-a"], pair.targets["site-b"]
    for site, target in pair.targets.items():
        config = target.path("/etc/pacsvault/pacsvault.toml").read_text()
        peer = next(s for s in SITES if s != site)
        for line in ("[replication]", "enabled = true", f'appliance_name = "{site}"', f'peer_name = "{peer}"',
                     f'peer_address = "127.0.0.1:{pair.replication_ports[peer]}"',
                     f'listen = "127.0.0.1:{pair.replication_ports[site]}"',
                     'ca_file = "/etc/pacsvault/tls/ca.crt"', 'cert_file = "/etc/pacsvault/tls/appliance.crt"',
                     'key_file = "/etc/pacsvault/tls/appliance.key"', "max_backoff_s = 1.0"):
            assert line in config.splitlines(), f"{site}: {line!r} missing from pacsvault.toml:\n{config}"
    ports: dict[str, int] = {}
    try:
        # Each daemon from its provisioned files; distinct loopback API ports.
        for target in (b, a):
            ports[target.name] = _start_daemon(pair, target)
        shutil.copy(DICOM_FILE, a.path("/tmp/CT_small.dcm"))
        stored = _client(pair, a, ports["site-a"], "store", "--json", "/tmp/CT_small.dcm")
        assert stored.returncode == 0, stored.stdout + stored.stderr
        status: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = _client(pair, a, ports["site-a"], "replication", "status", "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            status = json.loads(result.stdout)
            if status["pending_entries"] == 0 and int(status["blobs_replicated"]) >= 1:  # type: ignore[call-overload]
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"site-a did not replicate to site-b in 60s: {status}\n"
                                 + (pair.work / "pacsvaultd-site-a.log").read_text()[-3000:])
        assert status["peer"] == "site-b", status
        # The shards are on site B's last tier: data_shards + parity_shards of them (4 + 2).
        shards = [p for p in b.path("/srv/pacsvault/capacity/replica/shards").rglob("*") if p.is_file()]
        assert len(shards) == 6, shards
    finally:
        for target in (a, b):
            if target.name in _daemons:
                _stop_daemon(target)


def test_daemons_made_their_keyrings_off_the_data_disks(pair: Pair) -> None:
    _ensure_keyrings(pair)
    rings: dict[str, dict[str, object]] = {}
    for site, target in pair.targets.items():
        uid, gid = _ids(target)
        config = target.path("/etc/pacsvault/pacsvault.toml").read_text()
        assert f'key_file = "{KEYRING}"' in config.splitlines(), f"{site}: key_file missing:\n{config}"
        # Made at first start by the daemon itself: its user's, readable by nobody else.
        info = target.path(KEYRING).stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (uid, gid, 0o600), f"{site}: {info}"
        rings[site] = json.loads(target.path(KEYRING).read_text())
        # Nothing keyring-like on the data disks (the namespace sees the mounted volume).
        for data in ("/var/lib/pacsvault", "/srv/pacsvault/hot", "/srv/pacsvault/capacity"):
            found = subprocess.run(pair.ns.command("find", str(target.path(data)), "-name", "keyring*"),
                                   capture_output=True, text=True, check=True).stdout.split()
            assert found == [], f"{site}: keyring files under {data}: {found}"
            assert not KEYRING.startswith(data + "/"), KEYRING
    # Each appliance made its own: no shared root secret, no shared key-encryption key.
    a, b = rings["site-a"], rings["site-b"]
    assert a["root"] != b["root"], "both appliances have the same keyring root"
    assert not {k["key"] for k in a["keks"].values()} & {k["key"] for k in b["keks"].values()}  # type: ignore[union-attr]


def test_keyring_folder_on_a_data_disk_stops_the_play(pair: Pair) -> None:
    inventory = pair.inventory("inventory-keydir", extra={
        "site-b": {"pacsvault_appliance_key_dir": "/srv/pacsvault/capacity/keys"}})
    result = pair.play(inventory, "converge-keydir", "--limit", "site-b")
    assert result.returncode != 0 and recap(result.stdout)["site-b"]["failed"] == 1, tail(result)
    assert "overlaps /srv/pacsvault/capacity" in result.stdout + result.stderr, tail(result)
    assert not pair.targets["site-b"].path("/srv/pacsvault/capacity/keys").exists()


def test_supplied_keyring_is_placed_and_never_silently_replaced(pair: Pair) -> None:
    """A rebuilt site gets its old keyring back from the controller; a different one stops the play."""
    _ensure_keyrings(pair)
    b = pair.targets["site-b"]
    uid, gid = _ids(b)
    ring_a = pair.targets["site-a"].path(KEYRING).read_bytes()
    ring_b = b.path(KEYRING).read_bytes()
    assert ring_a != ring_b
    keyrings = pair.work / "keyrings"
    keyrings.mkdir(mode=0o700, exist_ok=True)
    pair.vault_password_file.write_text("field-engineer-secret\n")
    pair.vault_password_file.chmod(0o600)
    # Site B's backup, vault-encrypted as the README says; site A's in clear.
    backup_b = keyrings / "site-b.json"
    encrypted = subprocess.run([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file",
                                str(pair.vault_password_file), "--output", str(backup_b)],
                               input=ring_b, capture_output=True, check=True)
    assert backup_b.read_bytes().startswith(b"$ANSIBLE_VAULT;"), encrypted.stderr
    copy_a = keyrings / "site-a.json"
    copy_a.write_bytes(ring_a)
    copy_a.chmod(0o600)
    try:
        # Site B lost its keyring (rebuilt system disk): the role puts the backup back.
        b.path(KEYRING).unlink()
        supplied = pair.inventory("inventory-keyring", extra={
            "site-b": {"pacsvault_appliance_keyring_src": str(backup_b)}})
        placed = pair.play(supplied, "converge-keyring", "--limit", "site-b")
        assert placed.returncode == 0, tail(placed)
        assert recap(placed.stdout)["site-b"]["changed"] >= 1
        info = b.path(KEYRING).stat()
        assert b.path(KEYRING).read_bytes() == ring_b
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (uid, gid, 0o600), info
        assert "create_key_file = false" in b.path("/etc/pacsvault/pacsvault.toml").read_text().splitlines()
        # The keyring's text is never printed, whatever the verbosity of the log.
        assert json.loads(ring_b)["root"] not in placed.stdout + placed.stderr
        # The daemon opens its sealed data with the restored keyring.
        _start_daemon(pair, b)
        _stop_daemon(b)

        again = pair.play(supplied, "converge-keyring-2", "--limit", "site-b")
        assert again.returncode == 0, tail(again)
        assert recap(again.stdout)["site-b"]["changed"] == 0, f"not idempotent:\n{tail(again, 120)}"

        # Another appliance's keyring: refused, the appliance's own left as it is.
        other = pair.inventory("inventory-keyring-other", extra={
            "site-b": {"pacsvault_appliance_keyring_src": str(copy_a)}})
        refused = pair.play(other, "converge-keyring-other", "--limit", "site-b")
        assert refused.returncode != 0 and recap(refused.stdout)["site-b"]["failed"] == 1, tail(refused)
        assert f"{KEYRING} on this appliance is not the keyring in pacsvault_appliance_keyring_src" \
            in refused.stdout + refused.stderr, tail(refused)
        assert b.path(KEYRING).read_bytes() == ring_b

        # Forced: replaced, and the old keyring kept beside it.
        forced = pair.play(other, "converge-keyring-force", "--limit", "site-b",
                           "-e", "pacsvault_appliance_keyring_force=true")
        assert forced.returncode == 0, tail(forced)
        assert b.path(KEYRING).read_bytes() == ring_a
        kept = list(b.path(KEY_DIR).glob("keyring.json.*~"))
        assert [p.read_bytes() for p in kept] == [ring_b], kept
        assert all(p.stat().st_mode & 0o077 == 0 for p in kept)
    finally:
        # Site B's own keyring back, as the daemon keeps it; no stray copies.
        for stray in b.path(KEY_DIR).glob("keyring.json.*~"):
            stray.unlink()
        b.path(KEYRING).write_bytes(ring_b)
        os.chown(b.path(KEYRING), uid, gid)
        b.path(KEYRING).chmod(0o600)


def test_unit_passes_systemd_analyze_verify(pair: Pair) -> None:
    for site, target in pair.targets.items():
        unit = target.path("/etc/systemd/system/pacsvaultd.service")
        text = unit.read_text()
        for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=pacsvault",
                        "Restart=on-failure", "LimitNOFILE=65536",
                        "ReadWritePaths=/var/lib/pacsvault /srv/pacsvault/hot /srv/pacsvault/capacity"
                        f" {KEY_DIR}",
                        "RequiresMountsFor=/var/lib/pacsvault /srv/pacsvault/hot /srv/pacsvault/capacity"
                        f" {KEY_DIR}"):
            assert setting in text.splitlines(), f"{site}: {setting} missing from the unit"
        result = subprocess.run(
            ["systemd-analyze", "verify", f"--root={target.root}", "/etc/systemd/system/pacsvaultd.service"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, f"{site}: {result.stdout}{result.stderr}"
        assert "pacsvaultd" not in result.stderr, f"{site}: {result.stderr}"


def test_disk_health_collector_units_verify_and_its_pass_runs_as_provisioned(pair: Pair) -> None:
    for site, target in pair.targets.items():
        units = [f"/etc/systemd/system/pacsvault-hwcollect.{kind}" for kind in ("service", "timer")]
        service = target.path(units[0]).read_text().splitlines()
        for setting in ("User=root", "Group=pacsvault", "Type=oneshot", "NoNewPrivileges=yes",
                        "CapabilityBoundingSet=CAP_SYS_RAWIO CAP_SYS_ADMIN", "PrivateNetwork=yes",
                        "ReadWritePaths=/var/lib/pacsvault-hw",
                        "ExecStart=/opt/pacsvault/venv/bin/pacsvaultd --config /etc/pacsvault/pacsvault.toml"
                        " --log-level WARNING --collect-hardware /var/lib/pacsvault-hw"):
            assert setting in service, f"{site}: {setting} missing from the collector's unit"
        assert "OnUnitActiveSec=300s" in target.path(units[1]).read_text().splitlines(), site
        result = subprocess.run(["systemd-analyze", "verify", f"--root={target.root}", *units],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{site}: {result.stdout}{result.stderr}"
        assert "pacsvault-hwcollect" not in result.stderr, f"{site}: {result.stderr}"
        # The daemon reads where the collector writes.
        config = target.path("/etc/pacsvault/pacsvault.toml").read_text().splitlines()
        assert 'collector_dir = "/var/lib/pacsvault-hw"' in config, site
        # The unit's command, as root in the appliance root: one pass, results in the folder.
        ran = subprocess.run(
            pair.ns.command("chroot", str(target.root), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                            "/opt/pacsvault/venv/bin/pacsvaultd", "--config", "/etc/pacsvault/pacsvault.toml",
                            "--log-level", "WARNING", "--collect-hardware", "/var/lib/pacsvault-hw"),
            capture_output=True, text=True, timeout=300,
        )
        assert ran.returncode == 0 and "tool results in /var/lib/pacsvault-hw" in ran.stdout, \
            f"{site}: {ran.stdout}{ran.stderr}"


def test_files_have_their_owners_and_modes(pair: Pair) -> None:
    for site, target in pair.targets.items():
        uid, gid = _ids(target)
        expected = {
            "/etc/pacsvault/pacsvault.toml": (0, gid, 0o640),
            "/etc/pacsvault/tls": (0, gid, 0o750),
            "/etc/pacsvault/tls/appliance.key": (0, gid, 0o640),
            "/etc/pacsvault/tls/appliance.crt": (0, 0, 0o644),
            "/etc/pacsvault/tls/ca.crt": (0, 0, 0o644),
            "/var/lib/pacsvault": (uid, gid, 0o750),
            "/srv/pacsvault/hot": (uid, gid, 0o750),
            "/srv/pacsvault/capacity": (uid, gid, 0o750),
            # The daemon makes and replaces its keyring in here; nobody else may look in.
            KEY_DIR: (uid, gid, 0o700),
            # The disk health collector (root) writes here; the daemon's group reads.
            "/var/lib/pacsvault-hw": (0, gid, 0o2750),
        }
        for inside, (owner, group, mode) in expected.items():
            # stat in the namespace, which sees the mounted volumes.
            seen = subprocess.run(pair.ns.command("stat", "--format=%u %g %a", str(target.path(inside))),
                                  capture_output=True, text=True, check=True).stdout.split()
            assert seen == [str(owner), str(group), f"{mode:o}"], f"{site}:{inside}"
        # Both appliances' certificates chain to the one pair CA.
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pair.targets["site-a"].path("/etc/pacsvault/tls/ca.crt")),
             str(target.path("/etc/pacsvault/tls/appliance.crt"))],
            capture_output=True, text=True,
        )
        assert verify.returncode == 0, f"{site}: {verify.stdout}{verify.stderr}"
        # Made by pacsvault's helper: the identity the peer listener admits, and the address dialled.
        sans = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
             str(target.path("/etc/pacsvault/tls/appliance.crt"))],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"URI:spiffe://pacsvault/appliance/{site}" in sans and "IP Address:127.0.0.1" in sans, f"{site}: {sans}"
    assert not any(p.suffix == ".key" for p in pair.targets["site-a"].path("/etc/pacsvault").rglob("ca.*"))
    # The CA key stays on the controller, readable by its owner only.
    assert (pair.work / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600


def test_safe_mode_and_daemon_config_check_stop_the_play(pair: Pair) -> None:
    before = pair.targets["site-b"].path("/etc/pacsvault/pacsvault.toml").read_text()
    inventory = pair.inventory("inventory-bad", extra={
        # Site A: a second volume on a disk that holds swap.
        "site-a": {"pacsvault_appliance_volumes": [
            {"name": "capacity", "devices": [pair.capacity_disk], "fstype": "ext4",
             "mount_point": "/srv/pacsvault/capacity"},
            {"name": "extra", "devices": [pair.dirty_disk], "fstype": "ext4", "mount_point": "/srv/pacsvault/extra"},
        ]},
        # Site B: a value only the daemon's own validation rejects.
        "site-b": {"pacsvault_appliance_config": {"storage": {"compression_level": 25}}},
    })
    result = pair.play(inventory, "converge-bad")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert recap(result.stdout)["site-a"]["failed"] == 1 and recap(result.stdout)["site-b"]["failed"] == 1
    assert f"safe mode: {pair.dirty_disk} holds swap" in output, tail(result)
    assert "storage.compression_level must be between 1 and 19" in output, tail(result)
    signatures = subprocess.run(["wipefs", "--no-act", "--noheadings", "--output", "TYPE", pair.dirty_disk],
                                capture_output=True, text=True, check=True).stdout.split()
    assert signatures == ["swap"]
    assert pair.targets["site-b"].path("/etc/pacsvault/pacsvault.toml").read_text() == before


def test_an_object_store_tier_gets_its_vaulted_credentials_and_serves(pair: Pair, ceph: CephCluster) -> None:
    """Site B with an S3 tier on the test Ceph: its keys given vault-encrypted, placed 0600, never shown."""
    assert ceph.admin is not None
    b = pair.targets["site-b"]
    uid, gid = _ids(b)
    if not pair.vault_password_file.exists():
        pair.vault_password_file.write_text("field-engineer-secret\n")
        pair.vault_password_file.chmod(0o600)
    bucket = new_bucket(ceph)
    tiers = [
        {"name": "hot", "volumes": ["/srv/pacsvault/hot"], "volume_class": "ssd", "reserve_bytes": 1048576},
        {"name": "capacity", "volumes": ["/srv/pacsvault/capacity"], "volume_class": "hdd", "reserve_bytes": 1048576},
        {"name": "archive", "backend": "s3", "s3_endpoint": ceph.endpoint, "s3_bucket": bucket,
         "s3_profile": "archive-store", "s3_quota_bytes": 1 << 30, "reserve_bytes": 0},
    ]
    credentials = {"archive-store": {"access_key_id": ceph.admin.access_key,
                                     "secret_access_key": _vaulted(pair, ceph.admin.secret_key)}}
    inventory = pair.inventory("inventory-s3", extra={"site-b": {
        "pacsvault_appliance_tiers": tiers, "pacsvault_appliance_s3_credentials": credentials}})
    converged = pair.play(inventory, "converge-s3", "--limit", "site-b")
    assert converged.returncode == 0, tail(converged)
    assert ceph.admin.secret_key not in converged.stdout + converged.stderr
    again = pair.play(inventory, "converge-s3-2", "--limit", "site-b")
    assert again.returncode == 0 and recap(again.stdout)["site-b"]["changed"] == 0, tail(again, 120)
    placed = b.path("/etc/pacsvault/s3-credentials")
    info = placed.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (uid, gid, 0o600), info
    assert "[archive-store]" in placed.read_text() and ceph.admin.secret_key in placed.read_text()
    unit = b.path("/etc/systemd/system/pacsvaultd.service").read_text().splitlines()
    assert "Environment=AWS_SHARED_CREDENTIALS_FILE=/etc/pacsvault/s3-credentials" in unit
    config = b.path("/etc/pacsvault/pacsvault.toml").read_text().splitlines()
    assert 'backend = "s3"' in config and f's3_bucket = "{bucket}"' in config
    verified = subprocess.run(["systemd-analyze", "verify", f"--root={b.root}",
                               "/etc/systemd/system/pacsvaultd.service"], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    port = _start_daemon(pair, b)
    try:
        listed = _client(pair, b, port, "tiers", "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        archive = next(v for v in map(json.loads, listed.stdout.splitlines()) if v["tier"] == "archive")
        assert archive["backend"] == "s3" and archive["state"] == "active", archive
    finally:
        _stop_daemon(b)
    marker = plain_client(ceph).get_object(Bucket=bucket, Key=".pacsvault-volume")["Body"].read()
    assert json.loads(marker)["volume_id"] == archive["volume"]
    # Without an s3 tier (as the other tests expect site B): the credentials file goes away.
    back = pair.play(pair.inventory("inventory"), "converge-s3-removed", "--limit", "site-b")
    assert back.returncode == 0, tail(back)
    assert not placed.exists()


def _vaulted(pair: Pair, secret: str) -> dict[str, str]:
    """``secret`` encrypted with ansible-vault, as a JSON inventory carries a !vault value."""
    out = subprocess.run([str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file",
                          str(pair.vault_password_file), "--name", "secret", secret],
                         capture_output=True, text=True, check=True).stdout
    lines = out.split("!vault |", 1)[1].strip().splitlines()
    return {"__ansible_vault": "\n".join(line.strip() for line in lines)}



def _client(pair: Pair, target: Target, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The provisioned `pacsvault` command line, run inside the appliance root against its daemon."""
    return subprocess.run(
        pair.ns.command("chroot", str(target.root), "/opt/pacsvault/venv/bin/pacsvault",
                        "--server", f"127.0.0.1:{port}", "--timeout", "30", *args),
        capture_output=True, text=True, timeout=90,
    )


def _ids(target: Target) -> tuple[int, int]:
    for line in target.path("/etc/passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "pacsvault":
            return int(uid), int(gid)
    raise AssertionError(f"{target.name}: no pacsvault user")


def _ensure_keyrings(pair: Pair) -> None:
    """Each daemon has started once (and so made its keyring), also when this test runs alone."""
    for target in pair.targets.values():
        if not target.path(KEYRING).exists():
            _start_daemon(pair, target)
            _stop_daemon(target)


_daemons: dict[str, subprocess.Popen[bytes]] = {}


def _start_daemon(pair: Pair, target: Target) -> int:
    """pacsvaultd as its unit runs it (same user, config, working folder), on a free port."""
    uid, gid = _ids(target)
    port_file = target.path("/var/lib/pacsvault/test.port")
    port_file.unlink(missing_ok=True)
    log = (pair.work / f"pacsvaultd-{target.name}.log").open("wb")
    # The environment the unit gives it (the object store's credentials file).
    unit = target.path("/etc/systemd/system/pacsvaultd.service").read_text().splitlines()
    environment = [line.removeprefix("Environment=") for line in unit if line.startswith("Environment=")]
    _daemons[target.name] = subprocess.Popen(
        pair.ns.command("chroot", f"--userspec={uid}:{gid}", str(target.root), "/usr/bin/env", "-i",
                        "HOME=/var/lib/pacsvault", "PATH=/usr/bin:/bin", *environment, "/bin/sh", "-c",
                        "cd /var/lib/pacsvault && exec /opt/pacsvault/venv/bin/pacsvaultd"
                        " --config /etc/pacsvault/pacsvault.toml --listen 127.0.0.1:0"
                        " --port-file /var/lib/pacsvault/test.port --metrics-listen 127.0.0.1:0"
                        " --web-listen 127.0.0.1:0 --dicom-listen 127.0.0.1:0"),
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if _daemons[target.name].poll() is not None or time.monotonic() > deadline:
            _stop_daemon(target)
            raise AssertionError(f"{target.name}: pacsvaultd did not start: "
                                 + (pair.work / f"pacsvaultd-{target.name}.log").read_text())
        time.sleep(0.2)
    return int(port_file.read_text())


def _stop_daemon(target: Target) -> None:
    process = _daemons.pop(target.name)
    process.terminate()
    try:
        assert process.wait(timeout=60) == 0, f"{target.name}: pacsvaultd exited {process.returncode}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# Last in this file: it leaves site A provisioned for clinical systems (TLS, principals).
def test_a_clinical_system_stores_and_finds_over_tls_from_outside_the_appliance(pair: Pair) -> None:
    """Site A provisioned for clinical systems: the API, DICOMweb and /metrics on a network address
    with mutual TLS, the pair's CA as client CA, client certificates the role issued for its
    principals; the keyring backed up, encrypted with age on the appliance. The daemon runs in a
    network namespace the test made; a RIS on the host, outside the appliance's loopback, stores
    and finds over TLS through a veth, and Prometheus scrapes over HTTPS."""
    import requests

    from pacsvault.client import PacsvaultClient, PermissionDenied

    _ensure_keyrings(pair)
    a = pair.targets["site-a"]
    net = NetNamespace(f"pv{os.getpid() % 10000}", subnet=os.getpid() % 250 + 1)
    identity_file = pair.work / "backup-age-identity.txt"
    keygen = subprocess.run(["age-keygen", "-o", str(identity_file)], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.split("Public key:")[1].strip()
    backups = pair.work / "keyrings-age"
    ip = net.address
    try:
        inventory = pair.inventory("inventory-clinical", extra={"site-a": {
            "pacsvault_appliance_api_tls": "pair",
            "pacsvault_appliance_listen": f"{ip}:50051",
            "pacsvault_appliance_web_listen": f"{ip}:8443",
            "pacsvault_appliance_metrics_listen": f"{ip}:9464",
            "pacsvault_appliance_tls_subject_alt_names": [ip],
            "pacsvault_appliance_principals": [{"name": "ris", "roles": ["ingest", "reader"]},
                                               {"name": "prometheus", "roles": ["monitor"]}],
            "pacsvault_appliance_keyring_backup_recipients": [recipient],
            "pacsvault_appliance_keyring_backup_dir": str(backups),
        }})
        first = pair.play(inventory, "converge-clinical", "--limit", "site-a")
        assert first.returncode == 0, tail(first)
        again = pair.play(inventory, "converge-clinical-2", "--limit", "site-a")
        assert again.returncode == 0 and recap(again.stdout)["site-a"]["changed"] == 0, \
            f"not idempotent:\n{tail(again, 120)}"
        config = a.path("/etc/pacsvault/pacsvault.toml").read_text().splitlines()
        for line in (f'listen = "{ip}:50051"', 'local_listen = "127.0.0.1:50050"', f'listen = "{ip}:8443"',
                     f'listen = "{ip}:9464"', 'tls_cert_file = "/etc/pacsvault/tls/appliance.crt"',
                     'client_ca_file = "/etc/pacsvault/tls/ca.crt"', "[[security.principals]]",
                     'identity = "spiffe://pacsvault/client/ris"', 'roles = ["ingest", "reader"]'):
            assert line in config, f"{line!r} missing from pacsvault.toml:\n" + "\n".join(config)
        # The keyring: only ciphertext left the appliance, and it opens with the recipient's key.
        ring = a.path(KEYRING).read_bytes()
        backup = backups / "site-a.keyring.json.age"
        assert backup.read_text().startswith("-----BEGIN AGE ENCRYPTED FILE-----")
        assert subprocess.run(["age", "--decrypt", "-i", str(identity_file), str(backup)],
                              capture_output=True, check=True).stdout == ring
        assert json.loads(ring)["root"] not in first.stdout + first.stderr
        pki = pair.work / "pki"
        for name in ("ris", "prometheus"):
            assert (pki / f"{name}.key").stat().st_mode & 0o077 == 0, name

        _start_in(pair, a, net)
        try:
            study = _clinical_instance()
            tls = {"ca_file": str(pki / "ca.pem")}
            with PacsvaultClient(f"{ip}:50051", **tls, cert_file=str(pki / "ris.pem"),
                                 key_file=str(pki / "ris.key"), retry=None) as ris:
                assert ris.store(study.data).status == "stored"
                found = list(ris.find("study", patient_id="RIS-FIELD-1"))
                assert [m.study.study_instance_uid for m in found] == [study.study_uid]
                assert ris.get_instance(study.sop_uid) == study.data
            with PacsvaultClient(f"{ip}:50051", **tls, cert_file=str(pki / "prometheus.pem"),
                                 key_file=str(pki / "prometheus.key"), retry=None) as monitor:
                with pytest.raises(PermissionDenied):
                    list(monitor.find("study", patient_id="RIS-FIELD-1"))
            with grpc.insecure_channel(f"{ip}:50051") as plain, pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            web = requests.Session()
            web.trust_env, web.verify = False, str(pki / "ca.pem")
            web.cert = (str(pki / "ris.pem"), str(pki / "ris.key"))
            qido = web.get(f"https://{ip}:8443/dicom-web/studies", params={"PatientID": "RIS-FIELD-1"}, timeout=30)
            assert qido.status_code == 200 and study.study_uid in qido.text, qido.text
            scrape = requests.Session()
            scrape.trust_env, scrape.verify = False, str(pki / "ca.pem")
            scrape.cert = (str(pki / "prometheus.pem"), str(pki / "prometheus.key"))
            metrics = scrape.get(f"https://{ip}:9464/metrics", timeout=30)
            assert metrics.status_code == 200 and "pacsvault_ingest_instances_total" in metrics.text
            assert web.get(f"https://{ip}:9464/metrics", timeout=30).status_code == 403  # ris: no monitor role
            # On the appliance, its own tools use the local listener without a certificate.
            local = subprocess.run(net.join(pair.ns.command(
                "chroot", str(a.root), "/opt/pacsvault/venv/bin/pacsvault", "--server", "127.0.0.1:50050",
                "--timeout", "30", "find", "--level", "study", "--patient-id", "RIS-FIELD-1", "--json")),
                capture_output=True, text=True, timeout=90)
            assert local.returncode == 0 and study.study_uid in local.stdout, local.stdout + local.stderr
        finally:
            _stop_daemon(a)
    finally:
        net.close()


class _Instance:
    def __init__(self, data: bytes, study_uid: str, sop_uid: str) -> None:
        self.data, self.study_uid, self.sop_uid = data, study_uid, sop_uid


def _clinical_instance() -> _Instance:
    """A real DICOM file (pydicom's CT_small) as a RIS would send it, with identifiers of its own."""
    import io

    dataset = pydicom.dcmread(DICOM_FILE)
    root = "1.2.826.0.1.3680043.10.88"
    dataset.PatientID, dataset.StudyInstanceUID = "RIS-FIELD-1", f"{root}.1"
    dataset.SeriesInstanceUID, dataset.SOPInstanceUID = f"{root}.1.1", f"{root}.1.1.1"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return _Instance(out.getvalue(), dataset.StudyInstanceUID, dataset.SOPInstanceUID)


def _start_in(pair: Pair, target: Target, net: NetNamespace) -> None:
    """pacsvaultd as its unit runs it, from the provisioned config alone, in the network namespace;
    then the provisioned health-check helper, as the role runs it, on the local listener."""
    uid, gid = _ids(target)
    log = (pair.work / f"pacsvaultd-{target.name}-clinical.log").open("wb")
    _daemons[target.name] = subprocess.Popen(net.join(pair.ns.command(
        "chroot", f"--userspec={uid}:{gid}", str(target.root), "/usr/bin/env", "-i", "HOME=/var/lib/pacsvault",
        "PATH=/usr/bin:/bin", "/bin/sh", "-c", "cd /var/lib/pacsvault && exec /opt/pacsvault/venv/bin/pacsvaultd"
        " --config /etc/pacsvault/pacsvault.toml")), stdout=log, stderr=subprocess.STDOUT)
    waited = subprocess.run(net.join(pair.ns.command(
        "chroot", str(target.root), "/opt/pacsvault/venv/bin/python", "/opt/pacsvault/libexec/pacsvault-wait-serving",
        "--server", "127.0.0.1:50050", "--timeout", "60")), capture_output=True, text=True, timeout=90)
    if waited.returncode != 0:
        _stop_daemon(target)
        raise AssertionError(f"{target.name}: not SERVING: {waited.stdout}{waited.stderr}\n"
                             + (pair.work / f"pacsvaultd-{target.name}-clinical.log").read_text()[-3000:])
