"""``pacsvaultd --collect-hardware DIR``: the privileged half of disk health polling.

Run as root with CAP_SYS_RAWIO and CAP_SYS_ADMIN only (the Ansible role's
pacsvault-hwcollect.service, on a timer), it runs one poller pass with the
daemon's settings so that it runs exactly the smartctl and nvme-cli commands
the daemon's own pass would, and leaves their results in DIR (see
:mod:`pacsvault.hardware.spool`). The daemon, unprivileged, reads them when
``[health] collector_dir`` names DIR. Results of disks that are gone are removed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import ConfigError
from pacsvault.daemon.health.volumes import ProgramTimeouts
from pacsvault.hardware import (
    CommandRunner,
    Discovery,
    HealthPoller,
    PollerConfig,
    RecordingRunner,
    SubprocessRunner,
)
from pacsvault.hardware.poller import DiskSource


@dataclass
class Collected:
    """What one collector pass did."""

    disks: int = 0
    results: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def poller_config(config: Config) -> PollerConfig:
    """The poller settings the daemon and the collector share, so their commands are the same."""
    health = config.health
    return PollerConfig(timeout_s=max(health.smartctl_timeout_s, health.nvme_timeout_s))


def tool_runner(config: Config) -> CommandRunner:
    """smartctl and nvme-cli, each with its configured timeout."""
    health = config.health
    return ProgramTimeouts(SubprocessRunner(), {"smartctl": health.smartctl_timeout_s,
                                                "nvme": health.nvme_timeout_s})


def collect(config: Config, folder: Path, *, runner: CommandRunner | None = None,
            disks: DiskSource | None = None, settings: PollerConfig | None = None) -> Collected:
    """One pass: every physical disk's tool results into ``folder``; raises ConfigError when it is unusable."""
    if not folder.is_dir():
        raise ConfigError(f"--collect-hardware {folder}: not a folder (the Ansible role makes it, mode 2750)")
    source = disks if disks is not None else Discovery()
    recording = RecordingRunner(runner if runner is not None else tool_runner(config), folder)
    with tempfile.TemporaryDirectory(prefix="pacsvault-hwcollect-") as scratch:
        # The collector keeps no trend state: the daemon's poller, reading the results, does.
        poller = HealthPoller(recording, time.time, Path(scratch) / "state.json", source,
                              settings if settings is not None else poller_config(config))
        result = poller.run_once()
    removed = recording.prune()
    return Collected(disks=sum(1 for key in result.assessments if not key.startswith("md:")),
                     results=list(recording.written), removed=removed)
