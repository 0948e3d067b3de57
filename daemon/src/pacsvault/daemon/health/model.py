"""What the health monitor knows at one moment, and the events between moments.

Plain frozen dataclasses: the monitor builds them, the service layer turns
them into protobuf, the metrics collector reads them. The hardware library's
:class:`Verdict` and :class:`Reason` are used as they are, so a reason reads
the same in ``pacsvault health`` as in ``pacsvault hw assess``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pacsvault.hardware import Reason, Verdict


class EventKind(enum.StrEnum):
    """Kinds of :class:`Event`; the first three come from the hardware poller."""

    DEVICE_ADDED = "device_added"
    DEVICE_REMOVED = "device_removed"
    VERDICT_CHANGED = "verdict_changed"
    CAPACITY_THRESHOLD = "capacity_threshold"
    WRITES_STOPPED = "writes_stopped"
    WRITES_RESUMED = "writes_resumed"
    # Not the disks': a security alert recorded in the audit trail (audit.alert_follower).
    SECURITY_ALERT = "security_alert"
    # A stored blob found missing or damaged (the scrub), repaired or not.
    STORED_DATA = "stored_data"


@dataclass(frozen=True)
class Event:
    """One change, numbered in the order it was published.

    Attributes:
        kind: What happened.
        subject: Device key (``serial:...``), array key (``md:md0``) or volume path.
        device: Device node, array name or volume path, for people.
        at: Wall-clock time (injected clock) of the pass that saw it.
        message: The event in one sentence.
        old_verdict: Verdict before, when it applies.
        new_verdict: Verdict after, when it applies.
        reasons: Non-healthy reasons behind the new verdict.
        sequence: Position in this daemon run's event stream (1, 2, ...);
            0 until published.
    """

    kind: EventKind
    subject: str
    device: str
    at: float
    message: str
    old_verdict: Verdict | None = None
    new_verdict: Verdict | None = None
    reasons: tuple[Reason, ...] = ()
    sequence: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        """JSON form for logs."""
        return {
            "kind": self.kind.value, "sequence": self.sequence, "subject": self.subject, "device": self.device,
            "at": self.at, "message": self.message,
            "old_verdict": self.old_verdict.value if self.old_verdict else None,
            "new_verdict": self.new_verdict.value if self.new_verdict else None,
            "reasons": [r.to_json_dict() for r in self.reasons],
        }


@dataclass(frozen=True)
class DeviceState:
    """One physical disk: identity from discovery, verdict from the poller."""

    key: str
    name: str
    node: str
    model: str
    serial: str
    wwn: str
    transport: str
    rotational: bool | None
    size_bytes: int
    verdict: Verdict
    reasons: tuple[Reason, ...]
    smart_supported: bool
    metrics: dict[str, float] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArrayState:
    """One md array."""

    key: str
    name: str
    level: str
    verdict: Verdict
    reasons: tuple[Reason, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeState:
    """One tier volume: its filesystem, what is beneath it, its room and verdict.

    Attributes:
        block_reason: Why the health monitor stopped new data landing here
            (``""`` when it did not); reads are never affected.
        accepts_writes: What placement will do now: not blocked, not failed
            and above its reserve.
    """

    tier: str
    volume_id: str
    path: str
    filesystem: str
    mountpoint: str
    devices: tuple[str, ...]
    arrays: tuple[str, ...]
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    verdict: Verdict
    reasons: tuple[Reason, ...]
    accepts_writes: bool
    block_reason: str = ""

    @property
    def used_percent(self) -> float:
        """Used share of the filesystem as ``df`` shows it (root reserve excluded)."""
        room = self.used_bytes + self.free_bytes
        return 100.0 * self.used_bytes / room if room else 0.0


@dataclass(frozen=True)
class TierState:
    """One tier: the worst of its volumes, and whether any takes new data."""

    name: str
    verdict: Verdict
    reasons: tuple[Reason, ...]
    accepts_writes: bool
    capacity_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class HealthSnapshot:
    """The whole health picture.

    Attributes:
        sequence: Sequence number of the last event already reflected here;
            a watcher skips events up to it.
        polled_at: Wall-clock time of the last finished disk poll, ``None``
            before the first one.
        poll_error: Why the last disk poll did not finish, ``""`` when it did.
        writable: At least one volume takes new data.
    """

    devices: tuple[DeviceState, ...] = ()
    arrays: tuple[ArrayState, ...] = ()
    volumes: tuple[VolumeState, ...] = ()
    tiers: tuple[TierState, ...] = ()
    sequence: int = 0
    polled_at: float | None = None
    poll_error: str = ""
    writable: bool = True
