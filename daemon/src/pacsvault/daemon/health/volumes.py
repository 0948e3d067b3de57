"""Map tier volumes to what is beneath them, and run the health tools.

The daemon-side adapters around the hardware library: which disks and md
arrays hold a volume's filesystem (:class:`DiscoveryMapper`), a disk source
that remembers what it last listed so the monitor describes exactly the
disks the poller judged (:class:`RecordingDisks`), and a command runner that
gives each tool its own timeout (:class:`ProgramTimeouts`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from pacsvault.daemon.health.placement import Beneath
from pacsvault.hardware import BlockDevice, CommandResult, CommandRunner, Discovery, Transport
from pacsvault.hardware.discovery import PHYSICAL_TRANSPORTS


class VolumeMapper(Protocol):
    """Finds what is beneath volume directories."""

    def beneath(self, paths: Sequence[str]) -> dict[str, Beneath]:
        """Map each path to its filesystem, disks and arrays."""
        ...


class DiscoveryMapper:
    """:class:`VolumeMapper` over pyudev discovery (sysfs when udev is absent).

    Args:
        discovery: Shared discovery.
    """

    def __init__(self, discovery: Discovery) -> None:
        self._discovery = discovery

    def beneath(self, paths: Sequence[str]) -> dict[str, Beneath]:
        """See :class:`VolumeMapper`; one device listing for all paths."""
        by_name = {d.name: d for d in self._discovery.block_devices()}
        found: dict[str, Beneath] = {}
        for path in paths:
            try:
                fs = self._discovery.devices_under(path)
            except OSError as exc:
                found[path] = Beneath(note=f"cannot inspect {path}: {exc.strerror or exc}")
                continue
            arrays = _arrays(fs.block_device, by_name)
            found[path] = Beneath(
                filesystem=fs.fstype, mountpoint=fs.mountpoint, devices=tuple(d.name for d in fs.devices),
                arrays=tuple(arrays), array_members={a: tuple(_leaves(a, by_name)) for a in arrays},
                note=fs.note,
            )
        return found


class RecordingDisks:
    """A disk source that keeps its last answer (see the module docstring).

    Args:
        source: Anything with ``physical_disks()``.
    """

    def __init__(self, source: Discovery) -> None:
        self._source = source
        self.last: list[BlockDevice] = []

    def physical_disks(self) -> list[BlockDevice]:
        """List the disks and remember them."""
        self.last = list(self._source.physical_disks())
        return list(self.last)


class ProgramTimeouts:
    """A command runner that picks the timeout by program name.

    The hardware poller has one timeout for every tool; operators configure
    smartctl and nvme-cli separately.

    Args:
        runner: The runner doing the work.
        timeouts: Seconds by program base name; others keep the caller's.
    """

    def __init__(self, runner: CommandRunner, timeouts: Mapping[str, float]) -> None:
        self._runner = runner
        self._timeouts = dict(timeouts)

    def __call__(self, argv: Sequence[str], timeout_s: float) -> CommandResult:
        """Run ``argv`` with its program's timeout."""
        program = os.path.basename(argv[0]) if argv else ""
        return self._runner(argv, self._timeouts.get(program, timeout_s))


def _arrays(top: str, by_name: Mapping[str, BlockDevice], depth: int = 0) -> list[str]:
    """md arrays met walking down from ``top`` (partition -> disk, md/dm -> slaves)."""
    device = by_name.get(top)
    if device is None or depth > 16:
        return []
    if device.devtype == "partition":
        return _arrays(device.parent, by_name, depth + 1)
    found = [device.name] if device.transport is Transport.MD else []
    for slave in device.slaves:
        found += [a for a in _arrays(slave, by_name, depth + 1) if a not in found]
    return found


def _leaves(top: str, by_name: Mapping[str, BlockDevice], depth: int = 0) -> list[str]:
    device = by_name.get(top)
    if device is None or depth > 16:
        return []
    if device.devtype == "partition":
        return _leaves(device.parent, by_name, depth + 1)
    if device.slaves:
        found: list[str] = []
        for slave in device.slaves:
            found += [n for n in _leaves(slave, by_name, depth + 1) if n not in found]
        return found
    return [device.name] if device.transport in PHYSICAL_TRANSPORTS else []
