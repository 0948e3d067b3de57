"""Builds the health monitor from the configuration: the one place it is wired."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pacsvault.daemon.config import Config
from pacsvault.daemon.health.monitor import HealthMonitor, Settings, TierVolume
from pacsvault.daemon.health.udev_watch import UdevWatcher
from pacsvault.daemon.health.volumes import DiscoveryMapper, ProgramTimeouts, RecordingDisks
from pacsvault.hardware import Discovery, HealthPoller, PollerConfig, SubprocessRunner


def build_monitor(
    config: Config,
    volumes: Callable[[], Sequence[TierVolume]],
    on_writable: Callable[[bool], None] | None = None,
    *,
    watch_udev: bool = True,
) -> HealthMonitor:
    """The production monitor: real tools, pyudev discovery, wall clock.

    Args:
        config: Daemon configuration (``[health]``, ``data_dir``).
        volumes: Current tier volumes, e.g. ``lambda: archive.blobs.volumes``.
        on_writable: Told whether any volume takes new data.
        watch_udev: Poll early when udev reports a disk coming or going.
    """
    health = config.health
    discovery = Discovery()
    disks = RecordingDisks(discovery)
    runner = ProgramTimeouts(SubprocessRunner(), {"smartctl": health.smartctl_timeout_s,
                                                  "nvme": health.nvme_timeout_s})
    poller = HealthPoller(runner, time.time, config.resolve(health.state_file), disks,
                          PollerConfig(timeout_s=max(health.smartctl_timeout_s, health.nvme_timeout_s)))
    settings = Settings(
        poll_interval_s=health.poll_interval_s, capacity_interval_s=health.capacity_interval_s,
        capacity_warning_percent=health.capacity_warning_percent, max_watchers=health.max_watchers,
        watch_queue_size=health.watch_queue_size,
    )
    return HealthMonitor(
        poller=poller, disks=disks, mapper=DiscoveryMapper(discovery), volumes=volumes, settings=settings,
        on_writable=on_writable, watcher=(lambda wake: UdevWatcher(wake)) if watch_udev else None,
    )
