"""Verdicts, the reasons behind them, and the assessment of one device or array.

Every parser in this package ends in an :class:`Assessment`; nothing else
crosses the package boundary, so the daemon and the CLI only need to know
these three types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable


class Verdict(enum.StrEnum):
    """Health verdict of a device or array, ordered by :attr:`severity`.

    ``UNSUPPORTED`` is a *state*, not a failure: the device has no SMART
    (a virtio disk, a hardware-RAID virtual volume). ``UNKNOWN`` means we
    tried and could not tell (tool missing, timed out, output unparseable).
    Unknown ranks above unsupported because it needs a human to look, and
    below warning because a concrete warning is more actionable than a
    missing answer.
    """

    HEALTHY = "healthy"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"
    WARNING = "warning"
    FAILING = "failing"
    FAILED = "failed"

    @property
    def severity(self) -> int:
        """Rank used by :func:`worst`; higher is worse."""
        return _SEVERITY[self]

    @property
    def is_failure(self) -> bool:
        """True for verdicts that mean "replace this device"."""
        return self in (Verdict.FAILING, Verdict.FAILED)


_SEVERITY: dict[Verdict, int] = {v: i for i, v in enumerate(Verdict)}


def worst(verdicts: Iterable[Verdict], default: Verdict = Verdict.HEALTHY) -> Verdict:
    """Return the most severe verdict of ``verdicts``.

    Args:
        verdicts: Verdicts to combine.
        default: Returned when ``verdicts`` is empty.

    Returns:
        The verdict with the highest severity, or ``default``.
    """
    return max(verdicts, key=lambda v: v.severity, default=default)


class Category(enum.StrEnum):
    """What part of the system a reason is about.

    Kept separate from the verdict so that, for example, interface CRC errors
    can be shown as "check the cable" rather than "the disk is failing".
    """

    STATUS = "status"
    MEDIA = "media"
    WEAR = "wear"
    CABLING = "cabling"
    TEMPERATURE = "temperature"
    RAID = "raid"
    TREND = "trend"
    TOOL = "tool"
    INFO = "info"


@dataclass(frozen=True)
class Reason:
    """One observation that contributed to a verdict.

    Attributes:
        source: Where the value came from (``smartctl``, ``nvme-cli``,
            ``mdstat``, ``sysfs``, ``mdadm``, ``poller``, ...).
        attribute: Field or attribute name, e.g. ``5 Reallocated_Sector_Ct``.
        value: The observed value, as text so any type can be shown.
        rule: The rule in words, e.g. ``raw > 0 (Backblaze)``.
        verdict: The verdict this observation implies on its own;
            ``HEALTHY`` marks an informational note.
        category: What the reason is about (media, cabling, ...).
    """

    source: str
    attribute: str
    value: str
    rule: str
    verdict: Verdict
    category: Category = Category.STATUS

    def to_json_dict(self) -> dict[str, str]:
        """Return a JSON-serialisable dict of this reason."""
        return {
            "source": self.source,
            "attribute": self.attribute,
            "value": self.value,
            "rule": self.rule,
            "verdict": self.verdict.value,
            "category": self.category.value,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Reason:
        """Rebuild a reason written by :meth:`to_json_dict`."""
        return cls(
            source=str(data["source"]),
            attribute=str(data["attribute"]),
            value=str(data["value"]),
            rule=str(data["rule"]),
            verdict=Verdict(data["verdict"]),
            category=Category(data.get("category", Category.STATUS.value)),
        )


@dataclass
class Assessment:
    """The health of one device or array at one moment.

    Attributes:
        kind: What was assessed, e.g. ``ata``, ``scsi``, ``nvme``,
            ``md_array``, ``md_member``, ``inventory``, ``unknown``.
        device: Device path or array name (``/dev/sda``, ``md0``).
        model: Model name when known.
        serial: Serial number when known; used as the stable identity.
        verdict: Combined verdict (worst of the reasons, or a state).
        reasons: Every observation that mattered, including notes.
        metrics: Numeric counters (raw values after decoding) that the
            poller compares between polls.
    """

    kind: str
    device: str
    model: str = ""
    serial: str = ""
    verdict: Verdict = Verdict.HEALTHY
    reasons: list[Reason] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """Stable key for trend tracking: serial when known, else device."""
        return f"serial:{self.serial}" if self.serial else f"device:{self.device}"

    def add(self, reason: Reason) -> None:
        """Append ``reason`` and worsen the verdict if it implies worse."""
        self.reasons.append(reason)
        self.verdict = worst([self.verdict, reason.verdict])

    def reasons_in(self, category: Category) -> list[Reason]:
        """Return the reasons of one category, e.g. cabling advisories."""
        return [r for r in self.reasons if r.category == category]

    def to_json_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the CLI's ``--json`` shape)."""
        return {
            "kind": self.kind,
            "device": self.device,
            "model": self.model,
            "serial": self.serial,
            "verdict": self.verdict.value,
            "reasons": [r.to_json_dict() for r in self.reasons],
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Assessment:
        """Rebuild an assessment written by :meth:`to_json_dict`."""
        return cls(
            kind=str(data["kind"]),
            device=str(data["device"]),
            model=str(data.get("model", "")),
            serial=str(data.get("serial", "")),
            verdict=Verdict(data["verdict"]),
            reasons=[Reason.from_json_dict(r) for r in data.get("reasons", [])],
            metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
        )
