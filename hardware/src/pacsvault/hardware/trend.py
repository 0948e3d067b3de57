"""Counter growth between polls: the strongest signal SMART offers.

Backblaze watches for "rapidly increasing" counts and Google (FAST'07)
found the *first* reallocation a strong predictor, so a counter that grows
adds a reason even when its absolute value is still small. A growth mark is
held for ``hold_s`` seconds after it was seen; without the hold, a disk that
grew once would flap between FAILING and its absolute verdict on every
other poll and emit an event each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pacsvault.hardware.verdict import Assessment, Category, Reason, Verdict

DEFAULT_HOLD_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class GrowthRule:
    """What growth of one metric implies."""

    verdict: Verdict
    category: Category
    words: str


# HEALTH_RULES.md section 3: growing reallocations are FAILING; other
# growing counters raise at least a WARNING.
GROWTH_RULES: dict[str, GrowthRule] = {
    "ata.5": GrowthRule(Verdict.FAILING, Category.MEDIA, "reallocated sectors growing"),
    "ata.187": GrowthRule(Verdict.FAILING, Category.MEDIA, "reported uncorrectable errors growing"),
    "ata.197": GrowthRule(Verdict.FAILING, Category.MEDIA, "pending sectors growing"),
    "ata.198": GrowthRule(Verdict.FAILING, Category.MEDIA, "offline uncorrectable sectors growing"),
    "ata.10": GrowthRule(Verdict.WARNING, Category.MEDIA, "spin retries growing"),
    "ata.184": GrowthRule(Verdict.WARNING, Category.MEDIA, "end-to-end errors growing"),
    "ata.188": GrowthRule(Verdict.WARNING, Category.CABLING, "command timeouts growing"),
    "ata.199": GrowthRule(Verdict.WARNING, Category.CABLING, "interface CRC errors growing: check cable/backplane"),
    "scsi.grown_defects": GrowthRule(Verdict.WARNING, Category.MEDIA, "SAS grown defect list growing"),
    "scsi.uncorrected_read": GrowthRule(Verdict.WARNING, Category.MEDIA, "uncorrected read errors growing"),
    "scsi.uncorrected_write": GrowthRule(Verdict.WARNING, Category.MEDIA, "uncorrected write errors growing"),
    "scsi.uncorrected_verify": GrowthRule(Verdict.WARNING, Category.MEDIA, "uncorrected verify errors growing"),
    "nvme.media_errors": GrowthRule(Verdict.WARNING, Category.MEDIA, "NVMe media errors growing"),
    "nvme.warning_temp_time": GrowthRule(Verdict.WARNING, Category.TEMPERATURE, "time above warning temperature growing"),
    "nvme.critical_comp_time": GrowthRule(Verdict.WARNING, Category.TEMPERATURE, "time above critical temperature growing"),
}


@dataclass(frozen=True)
class Growth:
    """One observed increase of a metric."""

    metric: str
    previous: float
    current: float
    at: float

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for the poller state file."""
        return {"metric": self.metric, "previous": self.previous, "current": self.current, "at": self.at}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Growth:
        """Inverse of :meth:`to_json_dict`."""
        return cls(str(data["metric"]), float(data["previous"]), float(data["current"]), float(data["at"]))


def apply_trends(
    assessment: Assessment,
    previous_metrics: Mapping[str, float],
    marks: Mapping[str, Growth],
    now: float,
    hold_s: float = DEFAULT_HOLD_S,
) -> dict[str, Growth]:
    """Add a reason for every metric that grew recently.

    Args:
        assessment: Current assessment; reasons are added to it.
        previous_metrics: Metrics of the previous poll.
        marks: Growth marks kept from earlier polls.
        now: Current time (seconds, from the injected clock).
        hold_s: How long a growth keeps counting.

    Returns:
        The growth marks to persist for the next poll.
    """
    kept = {m: g for m, g in marks.items() if now - g.at <= hold_s}
    for metric in GROWTH_RULES:
        current, previous = assessment.metrics.get(metric), previous_metrics.get(metric)
        # A decrease means a replaced drive or a counter reset; not growth.
        if current is not None and previous is not None and current > previous:
            kept[metric] = Growth(metric, previous, current, now)
    for metric, growth in sorted(kept.items()):
        rule = GROWTH_RULES.get(metric)
        if rule is None:
            continue
        assessment.add(Reason("poller", metric, f"{growth.previous:g} -> {growth.current:g}",
                              f"{rule.words} (seen within the last {hold_s / 3600:g} h)",
                              rule.verdict, Category.TREND))
    return kept
