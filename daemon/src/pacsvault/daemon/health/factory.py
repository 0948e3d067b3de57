"""Builds the health monitor from the configuration: the one place it is wired."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pacsvault.daemon.config import Config
from pacsvault.daemon.health.collector import poller_config, tool_runner
from pacsvault.daemon.health.monitor import HealthMonitor, Settings, TierVolume
from pacsvault.daemon.health.udev_watch import UdevWatcher
from pacsvault.daemon.health.volumes import DiscoveryMapper, RecordingDisks
from pacsvault.hardware import CommandRunner, Discovery, HealthPoller, SpoolRunner

SPOOL_READ_INTERVAL_S = 60.0


def build_monitor(
    config: Config,
    volumes: Callable[[], Sequence[TierVolume]],
    on_writable: Callable[[bool], None] | None = None,
    *,
    watch_udev: bool = True,
) -> HealthMonitor:
    """The production monitor: real tools (or a collector's results of them), pyudev discovery, wall clock.

    Args:
        config: Daemon configuration (``[health]``, ``data_dir``).
        volumes: Current tier volumes, e.g. ``lambda: archive.blobs.volumes``.
        on_writable: Told whether any volume takes new data.
        watch_udev: Poll early when udev reports a disk coming or going.
    """
    health = config.health
    discovery = Discovery()
    disks = RecordingDisks(discovery)
    runner: CommandRunner = tool_runner(config)
    poll_s = health.poll_interval_s
    if health.collector_dir:
        # A collector pass runs every poll_interval_s; three missed passes make the results stale.
        runner = SpoolRunner(config.resolve(health.collector_dir), max_age_s=3 * health.poll_interval_s)
        # Reading its files costs nothing like running smartctl: read them often, so a
        # pass (the first after a boot, say) shows within a minute, not a poll interval.
        poll_s = min(poll_s, SPOOL_READ_INTERVAL_S)
    poller = HealthPoller(runner, time.time, config.resolve(health.state_file), disks, poller_config(config))
    settings = Settings(
        poll_interval_s=poll_s, capacity_interval_s=health.capacity_interval_s,
        capacity_warning_percent=health.capacity_warning_percent, max_watchers=health.max_watchers,
        watch_queue_size=health.watch_queue_size,
    )
    return HealthMonitor(
        poller=poller, disks=disks, mapper=DiscoveryMapper(discovery), volumes=volumes, settings=settings,
        on_writable=on_writable, watcher=(lambda wake: UdevWatcher(wake)) if watch_udev else None,
    )
