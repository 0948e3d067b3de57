"""Health events: what changed between two polls, once per change."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

from pacsvault.hardware.verdict import Assessment, Reason, Verdict


class EventKind(enum.StrEnum):
    """Kinds of :class:`HealthEvent`."""

    DEVICE_ADDED = "device_added"
    DEVICE_REMOVED = "device_removed"
    VERDICT_CHANGED = "verdict_changed"


@dataclass(frozen=True)
class HealthEvent:
    """One change in the health picture.

    Attributes:
        kind: What happened.
        key: Stable identity of the device or array.
        device: Device path or array name.
        at: Time of the poll that saw the change (injected clock).
        old_verdict: Verdict before (``None`` for an added device).
        new_verdict: Verdict after (``None`` for a removed device).
        reasons: Non-healthy reasons behind the new verdict.
    """

    kind: EventKind
    key: str
    device: str
    at: float
    old_verdict: Verdict | None
    new_verdict: Verdict | None
    reasons: tuple[Reason, ...] = ()

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for logs and the daemon's health RPCs."""
        return {
            "kind": self.kind.value,
            "key": self.key,
            "device": self.device,
            "at": self.at,
            "old_verdict": self.old_verdict.value if self.old_verdict else None,
            "new_verdict": self.new_verdict.value if self.new_verdict else None,
            "reasons": [r.to_json_dict() for r in self.reasons],
        }


def diff_assessments(
    previous: Mapping[str, Assessment], current: Mapping[str, Assessment], at: float
) -> list[HealthEvent]:
    """Compare two polls; one event per added, removed or re-judged device.

    Args:
        previous: Assessments of the previous poll by key.
        current: Assessments of this poll by key.
        at: Time of this poll.

    Returns:
        Events sorted by key; nothing for devices whose verdict is unchanged.
    """
    events: list[HealthEvent] = []
    for key in sorted(set(previous) | set(current)):
        old, new = previous.get(key), current.get(key)
        if old is None and new is not None:
            events.append(HealthEvent(EventKind.DEVICE_ADDED, key, new.device, at, None, new.verdict, _why(new)))
        elif new is None and old is not None:
            events.append(HealthEvent(EventKind.DEVICE_REMOVED, key, old.device, at, old.verdict, None))
        elif old is not None and new is not None and old.verdict != new.verdict:
            events.append(HealthEvent(EventKind.VERDICT_CHANGED, key, new.device, at, old.verdict, new.verdict,
                                      _why(new)))
    return events


def _why(assessment: Assessment) -> tuple[Reason, ...]:
    return tuple(r for r in assessment.reasons if r.verdict is not Verdict.HEALTHY)
