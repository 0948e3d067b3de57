"""Real Debian 12 targets for the Ansible role: debootstrap roots in a private mount namespace.

The bare Debian root is made once with debootstrap and kept under
``$PACSVAULT_TEST_CACHE`` (default ``/var/cache/pacsvault-test``); each test run
copies it, so a warm run starts in seconds. Downloaded .deb files are kept there
too, one folder per site, so apt only fetches what changed.

Every mount (``/proc``, the apt cache, loop-device filesystems the role makes)
lives in a mount namespace held open by one ``sleep`` process: killing it
unmounts everything at once, so removing a root never walks into a host mount.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

CACHE = Path(os.environ.get("PACSVAULT_TEST_CACHE", "/var/cache/pacsvault-test"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# systemd is in every real appliance; here it lets `systemd-analyze verify --root` check the unit.
INCLUDE = ("systemd",)
DEBOOTSTRAP = ["debootstrap", "--variant=minbase", "--components=main", f"--include={','.join(INCLUDE)}", SUITE]

TOOLS = ("debootstrap", "chroot", "unshare", "nsenter", "losetup", "mkswap", "systemd-analyze", "openssl", "ip",
         "age", "age-keygen")

# What a real appliance's apt would use: the release, its updates and security.
SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# Package scripts must not start services in a chroot (smartd, mdmonitor).
POLICY_RC_D = "#!/bin/sh\n# A test chroot: no service starts from package scripts.\nexit 101\n"

# Named after its recipe, so a changed recipe makes a new base.
_RECIPE = repr((DEBOOTSTRAP, MIRROR, SOURCES, POLICY_RC_D)).encode()
BASE = CACHE / f"{SUITE}-minbase-{hashlib.sha256(_RECIPE).hexdigest()[:10]}"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the real-target test, in words."""
    problems = []
    if os.geteuid() != 0:
        problems.append("it must run as root (chroot, mount namespaces, loop devices)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing tools: {', '.join(missing)} "
                        "(apt-get install -y debootstrap systemd util-linux openssl iproute2 age)")
    return problems


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One test run at a time on this machine: they share the base, the apt caches and loop devices."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base(log: Path) -> Path:
    """The cached bare Debian root, made with debootstrap if it is not there yet."""
    if (BASE / "etc" / "debian_version").exists():
        return BASE
    partial = BASE.with_name(BASE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run(
            [*DEBOOTSTRAP, str(partial), MIRROR],
            stdout=out, stderr=subprocess.STDOUT, check=True, timeout=600,
        )
    (partial / "etc/apt/sources.list").unlink(missing_ok=True)
    (partial / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
    policy = partial / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
    (partial / "var/cache/apt/archives/partial").mkdir(parents=True)
    partial.rename(BASE)
    for stale in CACHE.glob(f"{SUITE}-minbase*"):
        if stale != BASE:
            shutil.rmtree(stale, ignore_errors=True)
    return BASE


class Namespace:
    """A private mount namespace, alive while its holder process runs."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])

    def command(self, *argv: str) -> list[str]:
        """argv run inside the namespace."""
        return ["nsenter", f"--target={self._holder.pid}", "--mount", "--", *argv]

    def run(self, *argv: str) -> None:
        subprocess.run(self.command(*argv), check=True, timeout=60)

    def close(self) -> None:
        self._holder.send_signal(signal.SIGKILL)
        self._holder.wait()


class NetNamespace:
    """A network namespace the test made, joined to the host by a veth pair (/30).

    A daemon started in it listens on its own addresses, never the host's, and
    the host reaches it through the veth: a client from outside the appliance's
    loopback, as a clinical system on the hospital's network.
    """

    def __init__(self, name: str, subnet: int) -> None:
        self.name = name
        self.host_address, self.address = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self._host_link, link = f"{name}-h", f"{name}-n"
        steps = [["ip", "netns", "add", name],
                 ["ip", "link", "add", self._host_link, "type", "veth", "peer", "name", link],
                 ["ip", "link", "set", link, "netns", name],
                 ["ip", "addr", "add", f"{self.host_address}/30", "dev", self._host_link],
                 ["ip", "link", "set", self._host_link, "up"],
                 ["ip", "netns", "exec", name, "ip", "addr", "add", f"{self.address}/30", "dev", link],
                 ["ip", "netns", "exec", name, "ip", "link", "set", link, "up"],
                 ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]]
        try:
            for step in steps:
                subprocess.run(step, check=True, capture_output=True, timeout=30)
        except BaseException:
            self.close()
            raise

    def join(self, argv: list[str]) -> list[str]:
        """``argv`` (an nsenter of the mount namespace) run in this network namespace too."""
        assert argv[0] == "nsenter", argv
        return ["nsenter", f"--net=/run/netns/{self.name}", *argv[1:]]

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self._host_link], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


class Target:
    """One Debian root, a copy of the cached base, prepared for the chroot connection."""

    def __init__(self, name: str, root: Path, namespace: Namespace) -> None:
        self.name = name
        self.root = root
        self._ns = namespace
        self._loops: list[str] = []
        subprocess.run(["cp", "-a", "--reflink=auto", str(BASE), str(root)], check=True, timeout=300)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        archives = CACHE / "apt-archives" / name
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        namespace.run("mount", "-t", "proc", "proc", str(root / "proc"))
        # libblkid needs /sys to find a filesystem by UUID, as mount does for the role's fstab entries.
        namespace.run("mount", "-t", "sysfs", "sysfs", str(root / "sys"))
        namespace.run("mount", "--bind", str(archives), str(root / "var/cache/apt/archives"))

    def attach_disk(self, image: Path, size_mib: int) -> str:
        """A loop device over a new sparse image, visible in the root under the same /dev path."""
        with image.open("wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        device = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True,
        ).stdout.strip()
        self._loops.append(device)
        st = os.stat(device)
        node = self.root / device.lstrip("/")
        node.unlink(missing_ok=True)
        os.mknod(node, 0o660 | 0o060000, os.makedev(os.major(st.st_rdev), os.minor(st.st_rdev)))
        return device

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def detach(self) -> None:
        for device in self._loops:
            subprocess.run(["losetup", "--detach", device], check=False)
