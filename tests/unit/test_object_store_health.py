"""An object-store tier's health from its calls: the window of calls, and the rules that make a warning."""

from __future__ import annotations

from pacsvault.daemon.health.object_store import reasons
from pacsvault.daemon.storage.object_volume import ObjectStoreStatus
from pacsvault.daemon.storage.s3_stats import CallStats, CallSummary
from pacsvault.hardware import Verdict


def summary(calls: int, errors: int, p50_s: float) -> CallSummary:
    return CallSummary(300.0, calls, errors, p50_s, p50_s * 3, "SlowDown" if errors else "", 1.0 if errors else None)


def status(calls: CallSummary, **extra: object) -> ObjectStoreStatus:
    fields = {"objects": 12, "object_bytes": 3400, "listed_age_s": 5.0, "object_lock": True,
              "next_probe_in_s": None, **extra}
    return ObjectStoreStatus(calls=calls, **fields)  # type: ignore[arg-type]


def by_attribute(found: list) -> dict:  # type: ignore[type-arg]
    return {r.attribute: r for r in found}


def test_the_window_keeps_the_last_minutes_and_their_quantiles() -> None:
    now = [1000.0]
    stats = CallStats(window_s=60.0, clock=lambda: now[0])
    for i in range(100):
        stats.record(0.001 * (i + 1))
    stats.record(2.0, "the store did not answer")
    got = stats.summary()
    assert (got.calls, got.errors) == (101, 1) and got.last_error == "the store did not answer"
    assert 0.049 <= got.p50_s <= 0.052 and got.p99_s >= 0.099
    now[0] += 61  # all of it left the window
    later = stats.summary()
    assert (later.calls, later.errors) == (0, 0) and later.p50_s == 0.0
    assert later.last_error == "the store did not answer" and later.last_error_age_s == 61


def test_a_healthy_store_has_notes_only() -> None:
    found = by_attribute(reasons(status(summary(200, 1, 0.004))))
    assert {r.verdict for r in found.values()} == {Verdict.HEALTHY}
    assert found["errors"].value == "1 of 200 calls" and found["latency"].value == "p50 4 ms, p99 12 ms"
    assert found["objects"].value == "12 (3400 bytes)" and found["object lock"].value == "on"


def test_errors_past_five_percent_or_a_slow_median_are_warnings() -> None:
    errors = by_attribute(reasons(status(summary(100, 6, 0.004))))["errors"]
    assert errors.verdict is Verdict.WARNING and "SlowDown" in errors.rule
    assert by_attribute(reasons(status(summary(100, 0, 1.5))))["latency"].verdict is Verdict.WARNING


def test_a_store_not_listed_or_reached_yet_and_the_next_look() -> None:
    found = by_attribute(reasons(status(summary(0, 0, 0.0), objects=None, object_bytes=None, object_lock=None,
                                        next_probe_in_s=8.0)))
    assert "objects" not in found and "object lock" not in found
    assert found["next look"].value == "in 8 s"
