"""Disk and volume health inside the daemon (issue 4).

:class:`HealthMonitor` runs the hardware library's poller in the
background, maps tier volumes to the disks and md arrays beneath them,
stops new data landing on a volume whose disks are failing, keeps the
current :class:`HealthSnapshot` and publishes :class:`Event`\\ s to
WatchHealth streams. :func:`build_monitor` wires it from the configuration.
"""

from __future__ import annotations

from pacsvault.daemon.health.factory import build_monitor
from pacsvault.daemon.health.model import (
    ArrayState,
    DeviceState,
    Event,
    EventKind,
    HealthSnapshot,
    TierState,
    VolumeState,
)
from pacsvault.daemon.health.monitor import SHUTTING_DOWN, HealthMonitor, Settings, Update

__all__ = [
    "ArrayState",
    "DeviceState",
    "Event",
    "EventKind",
    "HealthMonitor",
    "HealthSnapshot",
    "SHUTTING_DOWN",
    "Settings",
    "TierState",
    "Update",
    "VolumeState",
    "build_monitor",
]
