"""The archive's own health: volumes, index, replication; the health monitor adds the disks beneath.

Answered by the back office, which sees every volume, the mover and the
replication sender; serving processes forward GetApplianceHealth there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pacsvault.daemon import __version__
from pacsvault.daemon.health import object_store
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.replication.manager import ReplicationStatus
from pacsvault.daemon.tiering.manager import TieringManager, VolumeStatus
from pacsvault.hardware import Reason, Verdict

_STATES = ["healthy", "warning", "critical"]


@dataclass(frozen=True)
class VolumeHealth:
    tier: str
    path: str
    state: str  # healthy, warning, critical
    reason: str
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    accepts_writes: bool
    # The volume's own figures where the disk monitor has none (an object-store tier's calls).
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class ApplianceHealth:
    state: str
    reasons: list[str]
    version: str
    uptime_s: float
    index: dict[str, int]
    volumes: list[VolumeHealth] = field(default_factory=list)


# One more thing health must reflect, from elsewhere (integrity.concerns): (state, reason) pairs.
Concerns = Callable[[], list[tuple[str, str]]]


class ApplianceHealthReport:
    def __init__(self, index: IndexEnvironment, tiering: TieringManager,
                 replication: Callable[[], ReplicationStatus] | None = None,
                 started: float | None = None, insecure: list[str] | None = None,
                 concerns: Sequence[Concerns] = ()) -> None:
        """``insecure``: acknowledged weakened settings (security.production_guard), each a warning."""
        self._index, self._tiering, self._replication = index, tiering, replication
        self._started = time.monotonic() if started is None else started
        self._insecure = list(insecure or [])
        self._concerns = list(concerns)

    def health(self) -> ApplianceHealth:
        volumes = [_volume_health(v) for v in self._tiering.status()]
        index = self._index.stats()
        reasons = [f"volume {v.path}: {v.reason}" for v in volumes if v.state != "healthy"]
        # A failed or refused volume may hold the only copy of studies: critical.
        state = max((v.state for v in volumes), key=_STATES.index, default="critical")
        if not any(v.accepts_writes for v in volumes):
            state = "critical"
            reasons.insert(0, "no volume can take new data: stores will fail")
        if index["map_live"] > 0.9 * index["map_size"]:
            state = _at_least_warning(state)
            reasons.append(f"index is {100 * index['map_live'] / index['map_size']:.0f}% of index.map_size_bytes")
        if self._replication is not None:
            replication = self._replication()
            if replication.oldest_pending_age_s > replication.rpo_warning_s:
                state = _at_least_warning(state)
                reasons.append(
                    f"replication to {replication.peer} is {replication.oldest_pending_age_s:.0f}s behind "
                    f"(warning at {replication.rpo_warning_s:.0f}s; peer {replication.state}, "
                    f"{replication.pending_entries} changes pending)")
        if self._insecure:
            state = _at_least_warning(state)
            reasons.extend(self._insecure)
        for concerns in self._concerns:
            for level, reason in concerns():
                state = "critical" if level == "critical" else _at_least_warning(state)
                (reasons.insert(0, reason) if level == "critical" else reasons.append(reason))
        return ApplianceHealth(state, reasons, __version__, time.monotonic() - self._started, index, volumes)


def _at_least_warning(state: str) -> str:
    return "critical" if state == "critical" else "warning"


def _volume_health(status: VolumeStatus) -> VolumeHealth:
    """A volume's tiering status in health terms: what an operator must act on."""
    if status.state in ("failed", "refused"):
        state, reason = "critical", f"{status.state}: {status.reason}"
    elif not status.accepts_writes and status.state == "active":
        state, reason = "warning", f"full: {status.reason or 'past its high watermark or reserve'} " \
                                   f"({status.free_bytes} bytes free)"
    elif status.state == "draining":
        state, reason = "warning", f"draining: {status.blobs} blobs still to move"
    else:
        state, reason = "healthy", ""
    found = tuple(object_store.reasons(status.store)) if status.store is not None else ()
    warnings = [r for r in found if r.verdict is not Verdict.HEALTHY]
    if warnings and state == "healthy":
        state, reason = "warning", "; ".join(f"{r.attribute}: {r.value} ({r.rule})" for r in warnings)
    return VolumeHealth(
        status.tier, status.path, state, reason, status.capacity_bytes, status.used_bytes, status.free_bytes,
        accepts_writes=status.accepts_writes, reasons=found,
    )
