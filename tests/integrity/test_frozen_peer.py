"""A frozen peer (SIGSTOP: connections accepted, nothing answered) never holds up a local store,
and shows as stalled or unreachable within seconds (issue 15, defect 1)."""

from __future__ import annotations

import threading
import time

import pytest

from pacsvault.client import PacsvaultClient
from tests.client.cli_support import paused
from tests.conftest import dicom_bytes, identity
from tests.integration.test_replication_pair import Pair, pair, status, wait_drained  # noqa: F401

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.152"
STORES = 15
# The measure: one store a second, each with a 10 s deadline.
DEADLINE_S = 10.0
# How soon status and health must tell (the sender's own calls wait up to 60 s).
TELL_WITHIN_S = 8.0


def test_stores_go_on_and_status_says_so_while_the_peer_is_frozen(pair: Pair) -> None:  # noqa: F811
    with pair.a.client() as client:
        assert client.store(dicom_bytes(PatientID="FROZEN", **identity(0, ROOT))).ok
    wait_drained(pair.a)
    outcomes: list[str] = []
    told: dict[str, float] = {}
    with paused(pair.b):
        frozen_at = time.monotonic()
        watcher = threading.Thread(target=_watch, args=(pair, frozen_at, told), daemon=True)
        watcher.start()
        with PacsvaultClient(pair.a.target, timeout=DEADLINE_S, retry=None) as client:
            for n in range(1, STORES + 1):
                started = time.monotonic()
                result = client.store(dicom_bytes(PatientID="FROZEN", **identity(n, ROOT)))
                outcomes.append(result.status if result.ok else result.code)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        watcher.join(timeout=30)
        health_reasons = list(pair.a.client().health().reasons)
    assert outcomes == ["stored"] * STORES, outcomes
    assert "status" in told, "replication status never said the peer was stalled or unreachable"
    assert told["status"] <= TELL_WITHIN_S, told
    assert "health" in told and told["health"] <= TELL_WITHIN_S, told
    assert any("site-b" in reason and ("stalled" in reason or "unreachable" in reason) for reason in health_reasons)
    # Thawed, the peer takes the backlog and status says connected again.
    done = wait_drained(pair.a, timeout=120)
    assert done["state"] == "connected", done


def _watch(pair: Pair, since: float, told: dict[str, float]) -> None:  # noqa: F811
    with PacsvaultClient(pair.a.target, timeout=5) as client:
        while time.monotonic() - since < 20 and len(told) < 2:
            if "status" not in told and client.replication_status().state in ("stalled", "unreachable"):
                told["status"] = time.monotonic() - since
            if "health" not in told and any("stalled" in r or "unreachable" in r for r in client.health().reasons):
                told["health"] = time.monotonic() - since
            time.sleep(0.25)
