"""A full index is never a dead end: stores are refused before anything is acknowledged,
health says so, deletes still go through on the reserved headroom, and stores work again
once they freed space (issue 15, defect 6)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, dicom_bytes, identity

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.154"


def full_index_daemon(daemon_factory, tmp_path: Path) -> Daemon:  # type: ignore[no-untyped-def]
    config = tmp_path / "small-index.toml"
    config.write_text("[index]\nmap_size_bytes = 2097152\n[health]\ncapacity_interval_s = 0.5\n"
                      "[retention]\nsoft_delete_days = 0\n")
    return daemon_factory("small-index", config=config)


def fill(daemon: Daemon, limit: int = 3000) -> dict[str, bytes]:
    """Stores one-instance studies until the index refuses; returns what was acknowledged."""
    stored: dict[str, bytes] = {}
    with daemon.client(timeout=30) as client:
        for n in range(limit):
            data = dicom_bytes(PatientID=f"FULL-{n}", **identity(n, ROOT))
            result = client.store(data)
            if not result.ok:
                assert result.code == "RESOURCE_EXHAUSTED", result
                assert "index is full" in result.message and "delete studies" in result.message
                return stored
            stored[f"{ROOT}.{n}"] = data
    raise AssertionError(f"{limit} stores and the index never filled")


def test_a_full_index_refuses_stores_lets_deletes_through_and_recovers(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = full_index_daemon(daemon_factory, tmp_path)
    stored = fill(daemon)
    assert len(stored) > 50
    with daemon.client(timeout=30) as client:
        health = client.health()
        assert health.state == 3 and any("index is full" in r for r in health.reasons), health.reasons  # CRITICAL
        wait_for(lambda: client.serving_status("pacsvault.v1.ArchiveService") == "NOT_SERVING")
        # Every acknowledged store is there, byte for byte.
        for study_uid, data in list(stored.items())[:: max(1, len(stored) // 20)]:
            assert client.get_instance(f"{study_uid}.1.1") == data
        # Deletes go through on the reserved headroom; a handful free enough for stores again.
        deleted = list(stored)[: len(stored) // 3]
        for study_uid in deleted:
            client.delete_study(study_uid, "making room")
        after = client.store(dicom_bytes(PatientID="FULL-AFTER", **identity(9999, ROOT)))
        assert after.ok, after
        assert not any("index is full" in r for r in client.health().reasons)
        wait_for(lambda: client.serving_status("pacsvault.v1.ArchiveService") == "SERVING")
        for study_uid in deleted[:5]:
            assert list(client.find("study", study_instance_uid=study_uid)) == []


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
