"""One appliance report: the archive's own health plus the disks beneath it.

``Archive.health()`` knows the index and the volumes as the storage layer
sees them; the monitor knows the disks, arrays and placement. This module
decides the overall state from both, worst news first:

* CRITICAL: what the archive calls critical (no volume takes new data, ...),
  or any disk or md array FAILING or FAILED: someone must replace a disk.
* WARNING: what the archive calls a warning, a disk or array WARNING or
  UNKNOWN (we could not tell), a volume past the capacity warning
  threshold, or a disk poll that failed.
* UNSUPPORTED (virtio disks, no SMART) is a state, not a fault: healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pacsvault.daemon.health.model import HealthSnapshot
from pacsvault.daemon.health.placement import summary
from pacsvault.hardware import Verdict

_RANK = {"healthy": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class ApplianceReport:
    """What GetApplianceHealth answers.

    Attributes:
        state: ``healthy``, ``warning`` or ``critical``.
        reasons: Why not healthy, in words, worst first.
        archive: ``Archive.health()``'s answer (version, uptime, index, volumes).
        snapshot: The monitor's picture, ``None`` when no monitor runs.
    """

    state: str
    reasons: list[str]
    archive: Any
    snapshot: HealthSnapshot | None


def combine(archive: Any, snapshot: HealthSnapshot | None) -> ApplianceReport:
    """Merge ``Archive.health()`` and the monitor's snapshot; see the module docstring."""
    if snapshot is None:
        return ApplianceReport(archive.state, list(archive.reasons), archive, None)
    critical: list[str] = []
    warning: list[str] = []
    for device in snapshot.devices:
        identity = ", ".join(x for x in (device.model, f"serial {device.serial}" if device.serial else "") if x)
        _sort(device.verdict, f"disk {device.node}" + (f" ({identity})" if identity else ""),
              device.reasons, critical, warning)
    for array in snapshot.arrays:
        _sort(array.verdict, f"md array {array.name} ({array.level or 'level unknown'})", array.reasons,
              critical, warning)
    for volume in snapshot.volumes:
        for reason in volume.reasons:
            if reason.source == "capacity" and reason.attribute == "used":
                warning.append(f"volume {volume.path}: {reason.value} used, {reason.rule}")
    if snapshot.poll_error:
        warning.append(f"the last disk health poll failed: {snapshot.poll_error}")
    state = archive.state
    if critical:
        state = "critical"
    elif warning and _RANK[state] < _RANK["warning"]:
        state = "warning"
    archive_reasons = list(archive.reasons)
    if archive.state == "critical":
        reasons = archive_reasons + critical + warning
    else:
        reasons = critical + archive_reasons + warning
    return ApplianceReport(state, reasons, archive, snapshot)


def _sort(verdict: Verdict, label: str, reasons: Any, critical: list[str], warning: list[str]) -> None:
    if verdict.is_failure:
        critical.append(f"{label} is {verdict.value}: {summary(reasons)}")
    elif verdict in (Verdict.WARNING, Verdict.UNKNOWN):
        warning.append(f"{label} is {verdict.value}: {summary(reasons)}")
