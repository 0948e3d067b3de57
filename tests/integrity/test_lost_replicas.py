"""Replicas the peer's scrub cannot rebuild: both sides' health says so, and the primary, which
holds an intact copy, sends them again until the peer's copy is whole (issue 15, defect 7)."""

from __future__ import annotations

import time
from pathlib import Path

import blake3
import pytest

from tests.conftest import dicom_bytes, identity
from tests.integration.test_replication_pair import blob_files, shard_files, status, wait_drained
from tests.integrity.pairs import make_pair

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.153"


def test_the_primary_resends_a_replica_its_peer_cannot_rebuild(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(daemon_factory, tmp_path, replication="scrub_interval_s = 0.5\n")
    data = {n: dicom_bytes(PatientID="LOST", **identity(n, ROOT)) for n in range(3)}
    with pair.a.client() as client:
        for item in data.values():
            assert client.store(item).ok
    wait_drained(pair.a)
    victim = blob_files(pair.a)[0]
    name = blake3.blake3(victim.read_bytes()).hexdigest()
    shards = [s for s in shard_files(pair.b) if s.name.startswith(name + ".")]
    assert len(shards) == 6
    # While site-a is away, three of the six shards rot at the peer: past what 4 + 2 survives.
    pair.a.stop()
    kept = victim.read_bytes()
    victim.unlink()  # and site-a's own copy is away too for now, so it cannot send it back at once
    for shard in shards[:3]:
        raw = bytearray(shard.read_bytes())
        raw[-30] ^= 0x10
        shard.write_bytes(bytes(raw))
    wait_for_reason(pair.b, "cannot be rebuilt here")
    pair.a.start()
    wait_for_reason(pair.a, "cannot rebuild 1 replicas")
    assert status(pair.a)["peer_lost_replicas"] == 1
    # Its copy back, site-a sends it again; once the peer holds a verified copy, both sides are healthy.
    victim.write_bytes(kept)
    deadline = time.monotonic() + 90
    while True:
        a_reasons = list(pair.a.client().health().reasons)
        b_reasons = list(pair.b.client().health().reasons)
        whole = len([s for s in shard_files(pair.b) if s.name.startswith(name + ".")]) == 6
        if whole and not any("rebuil" in r for r in a_reasons + b_reasons) and status(pair.a)["pending_entries"] == 0:
            break
        assert time.monotonic() < deadline, (a_reasons, b_reasons)
        time.sleep(0.3)
    assert list(pair.b.data_dir.glob("tiers/*/replica/quarantine/*")), "the bad shards were set aside, not deleted"
    # The peer's copy is whole again: a lost local copy is repaired from it.
    victim.unlink()
    with pair.a.client() as client:
        for n, item in data.items():
            assert client.get_instance(f"{ROOT}.{n}.1.1") == item


def wait_for_reason(daemon, words: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not any(words in reason for reason in daemon.client().health().reasons):
        assert time.monotonic() < deadline, f"health never said {words!r}: {list(daemon.client().health().reasons)}"
        time.sleep(0.2)
