"""Against the real machine: subprocess runner, pyudev discovery, public API."""

from __future__ import annotations

import sys
from pathlib import Path

import pacsvault.hardware as hw
from pacsvault.hardware import CommandStatus, Discovery, SubprocessRunner, Transport, Verdict

SRC = Path(__file__).resolve().parents[2] / "hardware" / "src"


def test_runner_missing_binary_is_a_state() -> None:
    result = SubprocessRunner()(["pacsvault-no-such-tool-xyz", "--json"], timeout_s=5)
    assert result.status is CommandStatus.NOT_FOUND and result.returncode is None and result.error


def test_runner_timeout_is_a_state() -> None:
    result = SubprocessRunner()([sys.executable, "-c", "import time; print('partial', flush=True); time.sleep(30)"],
                                timeout_s=0.5)
    assert result.status is CommandStatus.TIMEOUT and "0.5" in result.error


def test_runner_keeps_nonzero_exit_and_output() -> None:
    # smartctl's exit status is a bitmask: non-zero must come back untouched.
    result = SubprocessRunner()([sys.executable, "-c", "import sys; print('{}'); sys.exit(64)"], timeout_s=10)
    assert result.ran and result.returncode == 64 and result.stdout.strip() == "{}"


def test_discovery_finds_a_disk_here() -> None:
    discovery = Discovery()
    devices = discovery.block_devices()
    disks = discovery.physical_disks()
    assert devices and disks
    for disk in disks:
        assert disk.node.startswith("/dev/") and disk.size_bytes > 0
        assert disk.transport in Transport
    # Loop and md layers are never reported as physical disks.
    assert not [d for d in disks if d.transport in (Transport.LOOP, Transport.MD, Transport.DM)]


def test_devices_under_work_main() -> None:
    found = Discovery().devices_under(Path(__file__).resolve().parents[2])
    assert found.mountpoint and found.fstype
    if found.devices:
        assert all(d.devtype == "disk" for d in found.devices)
    else:
        # Virtual/overlay filesystems have no disk; that must be said, not hidden.
        assert found.note


def test_devices_under_virtual_filesystem_explains() -> None:
    found = hw.devices_under("/proc/self")
    assert found.devices == () and "not backed by a block device" in found.note


def test_smart_on_this_machine_is_unsupported_or_known(tmp_path: Path) -> None:
    # Real discovery + real subprocess runner; smartctl may or may not be
    # installed. Virtio/unknown disks must never come out as failing.
    poller = hw.HealthPoller(SubprocessRunner(), lambda: 0.0, tmp_path / "state.json", Discovery(),
                             hw.PollerConfig(timeout_s=20, mdstat_path=str(tmp_path / "no-mdstat"),
                                             sysfs_root=str(tmp_path / "no-sys")))
    result = poller.run_once()
    assert result.assessments
    for disk in Discovery().physical_disks():
        if disk.transport is Transport.VIRTIO:
            assessment = next(a for a in result.assessments.values() if a.device == disk.node)
            assert assessment.verdict is Verdict.UNSUPPORTED
    assert not [a for a in result.assessments.values() if a.verdict.is_failure]


def test_public_surface_is_sorted_and_namespace_package() -> None:
    assert hw.__all__ == sorted(hw.__all__)
    assert all(hasattr(hw, name) for name in hw.__all__)
    assert not (SRC / "pacsvault" / "__init__.py").exists()
    assert (SRC / "pacsvault" / "hardware" / "__init__.py").exists()
