"""The end of a break-glass grant is recorded once, when its time has run out (a real index and trail)."""

from __future__ import annotations

from pathlib import Path

from pacsvault.daemon.audit import trail as audit
from pacsvault.daemon.audit.alerts import AlertKind, AlertSink, alert_of
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.security.break_glass_watch import BreakGlassWatch
from pacsvault.daemon.security.credentials import CredentialStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_end_of_break_glass_is_an_alert_recorded_once(tmp_path: Path) -> None:
    clock = Clock()
    index = IndexEnvironment(tmp_path / "index", map_size=16 * 1024 * 1024)
    credentials = CredentialStore(index, clock)
    key, signer = audit.load_or_create_keys(tmp_path / "keys")
    trail = audit.AuditTrail(tmp_path / "trail.jsonl", key, signer)
    watch = BreakGlassWatch(credentials, AlertSink(trail))
    credentials.break_glass("spiffe://pacsvault/client/dr-house", "patient Canary in resus, no time", 5)
    assert watch.run_once() == 0, "still running"
    clock.now += 5 * 60
    assert credentials.active_break_glass("spiffe://pacsvault/client/dr-house") is None
    assert watch.run_once() == 1
    assert watch.run_once() == 0, "recorded once"
    credentials.break_glass("spiffe://pacsvault/client/dr-house", "another emergency, other patient", 1)
    clock.now += 61
    assert watch.run_once() == 1, "a new grant ends on its own"
    trail.close()
    ended = [r for r in audit.read_records(trail.path) if alert_of(r) == AlertKind.BREAK_GLASS_ENDED]
    assert [r["principal"] for r in ended] == ["spiffe://pacsvault/client/dr-house"] * 2
    assert "Canary" not in trail.path.read_text(), "the reason stays with the grant"
    index.close()
