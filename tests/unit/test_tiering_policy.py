"""Which studies move: the pure policy, table by table."""

from __future__ import annotations

import datetime

import pytest

from pacsvault.daemon.tiering import policy
from pacsvault.daemon.tiering.policy import AgeRule, StudyHeat, TierFill

NOW = datetime.datetime(2026, 6, 15, 12, tzinfo=datetime.timezone.utc).timestamp()
DAY = policy.DAY


def study(uid: str, *, accessed_days_ago: float = 1, stored_days_ago: float = 1, study_date: str = "20260601",
          pinned_until: str = "", size: int = 100) -> StudyHeat:
    return StudyHeat(uid, NOW - accessed_days_ago * DAY, NOW - stored_days_ago * DAY, study_date, pinned_until, size)


COLDEST_FIRST = [study("a", accessed_days_ago=30), study("b", accessed_days_ago=20),
                 study("c", accessed_days_ago=10), study("d", accessed_days_ago=1)]


@pytest.mark.parametrize(
    ("fill", "demoting", "expected"),
    [
        (TierFill(used=800, capacity=1000, high=0.85, low=0.70), False, []),        # below high: nothing
        (TierFill(used=860, capacity=1000, high=0.85, low=0.70), False, ["a", "b"]),  # free 160 to reach 700
        (TierFill(used=950, capacity=1000, high=0.85, low=0.70), False, ["a", "b", "c"]),
        (TierFill(used=2000, capacity=1000, high=0.85, low=0.70), False, ["a", "b", "c", "d"]),  # all it has
        (TierFill(used=750, capacity=1000, high=0.85, low=0.70), True, ["a"]),       # hysteresis: keep going to low
        (TierFill(used=700, capacity=1000, high=0.85, low=0.70), True, []),
    ],
)
def test_watermarks_demote_coldest_first(fill: TierFill, demoting: bool, expected: list[str]) -> None:
    chosen = [s.study_uid for s, _ in policy.demotions(fill, COLDEST_FIRST, NOW, AgeRule(), demoting)]
    assert chosen == expected


def test_pinned_studies_never_leave_until_their_date_passes() -> None:
    studies = [study("pinned", accessed_days_ago=99, pinned_until="20260615"),
               study("expired-pin", accessed_days_ago=98, pinned_until="20260614"),
               study("plain", accessed_days_ago=97)]
    fill = TierFill(used=1000, capacity=1000, high=0.85, low=0.10)
    assert [s.study_uid for s, _ in policy.demotions(fill, studies, NOW, AgeRule())] == ["expired-pin", "plain"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (AgeRule(0, "ingest"), []),
        (AgeRule(7, "ingest"), ["old-ingest"]),
        (AgeRule(7, "access"), ["old-access", "old-ingest", "old-date", "no-date"]),
        (AgeRule(365, "study_date"), ["old-date"]),
        (AgeRule(10_000, "study_date"), []),
    ],
)
def test_age_rule_demotes_old_studies_whatever_the_watermark(rule: AgeRule, expected: list[str]) -> None:
    studies = [
        study("old-access", accessed_days_ago=30, stored_days_ago=2),
        study("old-ingest", accessed_days_ago=8, stored_days_ago=30),
        study("old-ingest-but-read-today", accessed_days_ago=0.1, stored_days_ago=30),
        study("old-date", accessed_days_ago=400, stored_days_ago=2, study_date="20200101"),
        study("no-date", accessed_days_ago=400, stored_days_ago=2, study_date=""),
        study("young"),
    ]
    fill = TierFill(used=100, capacity=1000, high=0.85, low=0.70)  # far below the watermark
    assert [s.study_uid for s, _ in policy.demotions(fill, studies, NOW, rule)] == expected


def test_reasons_say_why() -> None:
    fill = TierFill(used=900, capacity=1000, high=0.85, low=0.80)
    old = [study("a", accessed_days_ago=40, stored_days_ago=40), study("b", accessed_days_ago=40, stored_days_ago=40)]
    reasons = [r for _, r in policy.demotions(fill, old, NOW, AgeRule(30, "ingest"))]
    assert reasons == ["watermark", "older than 30 days by ingest"]
