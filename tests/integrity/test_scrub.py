"""The local scrub (issue 15, item 1): every kind of damage on each tier found within one pass,
repaired from the peer, or reported naming study and instance; health, ATNA, /metrics, CLI."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from pacsvault.daemon import config as config_module
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.daemon.digest import address_of
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from tests.conftest import Daemon, dicom_bytes, identity, run_cli
from tests.integration.test_audit import audit_records
from tests.integration.test_replication_pair import wait_drained
from tests.integrity.damage import KINDS
from tests.integrity.pairs import make_pair

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.156"
TIERS = ("[tiering]\nmover_interval_s = 0.2\nmover_max_bytes_per_s = 1073741824\n"
         '[[tiers]]\nname = "hot"\nvolumes = ["tiers/hot-1"]\nreserve_bytes = 0\n'
         '[[tiers]]\nname = "capacity"\nvolumes = ["tiers/capacity"]\nreserve_bytes = 0\n')


def instances(patient: str, first: int, count: int) -> dict[str, bytes]:
    return {f"{ROOT}.{n}.1.1": dicom_bytes(PatientID=patient, **identity(n, ROOT)) for n in range(first, first + count)}


def store_on_both_tiers(daemon: Daemon, patient: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Four instances on the capacity tier (stored, then hot-1 drained) and four on hot (hot-2, added)."""
    cold, hot = instances(patient, 1, 4), instances(patient, 11, 4)
    with daemon.client() as client:
        for data in cold.values():
            assert client.store(data).ok
    drained = run_cli(daemon.target, "tiers", "drain", str(daemon.data_dir / "tiers/hot-1"), "--wait")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    (daemon.data_dir / "tiers/hot-2").mkdir()
    added = run_cli(daemon.target, "tiers", "add-volume", "hot", str(daemon.data_dir / "tiers/hot-2"))
    assert added.returncode == 0, added.stderr
    with daemon.client() as client:
        for data in hot.values():
            assert client.store(data).ok
        tiers = {m.instance.sop_instance_uid: m.instance.tier for m in client.find("instance", patient_id=patient)}
    assert {tiers[uid] for uid in cold} == {"capacity"} and {tiers[uid] for uid in hot} == {"hot"}
    return cold, hot


def damage_each_kind(daemon: Daemon, tier_set: dict[str, bytes]) -> dict[str, str]:
    """One instance of the set per kind of damage; returns sop uid -> kind."""
    keys = open_keys(config_module.Config(data_dir=str(daemon.data_dir)))
    sealer = BlobSealer(keys)  # type: ignore[arg-type]
    damaged = {}
    for (sop_uid, data), (kind, rot) in zip(tier_set.items(), KINDS.items(), strict=True):
        digest = address_of(data, sealer.address_key).hex
        path = next(daemon.data_dir.glob(f"tiers/*/blobs/blake3/{digest[:2]}/{digest[2:4]}/{digest}"))
        rot(path)
        damaged[sop_uid] = kind
    return damaged


def scrub_one_pass(daemon: Daemon) -> dict:
    before = scrub_status(daemon)["passes_completed"]
    started = run_cli(daemon.target, "scrub", "start")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 120
    while (status := scrub_status(daemon))["passes_completed"] < before + 1:
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    return status


def scrub_status(daemon: Daemon) -> dict:
    result = run_cli(daemon.target, "scrub", "status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_every_kind_of_damage_on_each_tier_is_found_in_one_pass_and_repaired_from_the_peer(
        daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(daemon_factory, tmp_path, extra_a=TIERS)
    cold, hot = store_on_both_tiers(pair.a, "SCRUB-PAIR")
    wait_drained(pair.a)
    damaged = damage_each_kind(pair.a, cold) | damage_each_kind(pair.a, hot)
    status = scrub_one_pass(pair.a)
    assert (status["found"], status["repaired"], status["unrepairable"]) == (8, 8, 0), status
    assert status["problems"] == []
    reasons = list(pair.a.data_dir.glob("tiers/*/quarantine/*.reason"))
    assert len(reasons) >= 6, "damaged copies are set aside with their reason (a zero-length one too)"
    with pair.a.client() as client:
        for sop_uid, data in (cold | hot).items():
            assert client.get_instance(sop_uid) == data, damaged.get(sop_uid)
    again = scrub_one_pass(pair.a)  # the repaired copies verify: nothing new is found
    assert again["found"] == 8


def test_without_a_peer_the_scrub_names_what_it_cannot_repair(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "pv.toml"
    config.write_text(TIERS)
    daemon = daemon_factory(config=config)
    cold, hot = store_on_both_tiers(daemon, "SCRUB-ALONE")
    damaged = damage_each_kind(daemon, cold) | damage_each_kind(daemon, hot)
    status = scrub_one_pass(daemon)
    assert (status["found"], status["repaired"], status["unrepairable"]) == (8, 0, 8), status
    named = {uid for p in status["problems"] for uid in p["sop_instance_uids"]}
    assert named == set(damaged)
    assert {p["tier"] for p in status["problems"]} == {"hot", "capacity"}
    assert all(p["study_instance_uid"] for p in status["problems"])
    # Scrub status exits 1 and says NOT REPAIRED; health is critical and names them.
    human = run_cli(daemon.target, "scrub", "status")
    assert human.returncode == 1 and human.stdout.count("NOT REPAIRED") == 8
    with daemon.client() as client:
        health = client.health()
    assert health.state == 3 and any("could not be repaired" in r for r in health.reasons)
    # The audit trail: an alert per unrepairable blob naming the patient, and authentication failures.
    records = audit_records(daemon)
    lost = [r for r in records if r.get("alert") == "StoredDataUnrepairable"]
    assert {r["sop_instance_uid"] for r in lost} == set(damaged)
    assert {r["patient_id"] for r in lost} == {"SCRUB-ALONE"}
    assert any(r.get("alert") == "BlobAuthenticationFailed" for r in records)
    # /metrics (the back office's, summing every process): the scrub's counters.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10).read().decode()
    assert "pacsvault_scrub_found_total 8.0" in metrics
    assert "pacsvault_scrub_unrepairable_total 8.0" in metrics
    assert "pacsvault_integrity_problems 8.0" in metrics
    assert 'pacsvault_health_events_total{kind="stored_data"} 8.0' in metrics
