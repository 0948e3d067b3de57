"""Which studies move, decided without any I/O, so it can be tested by table.

Demotion frees a tier that passed its high watermark down to its low
watermark, coldest (least recently accessed) studies first; an optional age
rule also demotes studies older than N days whatever the watermark. Pinned
studies never leave. Hysteresis (high to start, low to stop) keeps a tier
from flapping at the edge.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class StudyHeat:
    study_uid: str
    last_access: float
    first_stored_at: float
    study_date: str
    pinned_until: str
    bytes_on_tier: int


@dataclass(frozen=True, slots=True)
class TierFill:
    used: int
    capacity: int
    high: float
    low: float

    @property
    def over_high(self) -> bool:
        """At the high watermark: placement stops just below it, so "at" means
        within a little slack (1% of capacity, at most 64 MiB); this holds
        across restarts, unlike remembering that a blob overflowed."""
        return self.used > self.ceiling

    @property
    def ceiling(self) -> int:
        """Bytes the tier holds before it counts as at its high watermark."""
        slack = min(0.01 * self.capacity, 64 * 1024 * 1024)
        return int(self.high * self.capacity - slack)

    @property
    def room_below_high(self) -> int:
        return max(0, self.ceiling - self.used)

    @property
    def bytes_above_low(self) -> int:
        return max(0, int(self.used - self.low * self.capacity))


@dataclass(frozen=True, slots=True)
class AgeRule:
    days: int = 0
    basis: str = "ingest"  # ingest, study_date or access

    def is_old(self, study: StudyHeat, now: float) -> bool:
        """Old by the basis, and not read within the same span either: a study
        someone is reading now stays up, or promotion and demotion would fight."""
        if self.days <= 0 or now - study.last_access <= self.days * DAY:
            return False
        if self.basis == "study_date":
            return _date_age_days(study.study_date, now) > self.days
        when = study.last_access if self.basis == "access" else study.first_stored_at
        return now - when > self.days * DAY


def is_pinned(study: StudyHeat, now: float) -> bool:
    return bool(study.pinned_until) and study.pinned_until >= _today(now)


def demotions(fill: TierFill, coldest_first: Iterable[StudyHeat], now: float, rule: AgeRule,
              demoting: bool = False) -> Iterator[tuple[StudyHeat, str]]:
    """(study, reason) to demote, in order; ``demoting`` continues an earlier start."""
    need = fill.bytes_above_low if (demoting or fill.over_high) else 0
    for study in coldest_first:
        if need <= 0 and rule.days <= 0:
            return
        if is_pinned(study, now):
            continue
        if need > 0:
            need -= study.bytes_on_tier
            yield study, "watermark"
        elif rule.is_old(study, now):
            yield study, f"older than {rule.days} days by {rule.basis}"


def _today(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc).strftime("%Y%m%d")


def _date_age_days(study_date: str, now: float) -> float:
    try:
        date = datetime.datetime.strptime(study_date, "%Y%m%d").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return 0.0  # no usable StudyDate: never old by this rule
    return (now - date.timestamp()) / DAY
