"""The audit trail through a real daemon: what is recorded, verify and query
from the CLI, failing closed, and a cut trail caught by the peer's witness."""

from __future__ import annotations

import json
import subprocess
import time


from pathlib import Path

import grpc
import pytest

from tests.conftest import Daemon, dicom_bytes, identity, run_cli
from tests.integration.test_replication_pair import Pair, pair, status, store, wait_drained  # noqa: F401

from pacsvault.client import corpus as corpus_module  # noqa: E402


def audit_records(daemon: Daemon, *args: str) -> list[dict]:
    result = run_cli(daemon.target, "audit", "query", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_accesses_are_recorded_verified_and_queryable(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.store(dicom_bytes(PatientID="AUD-1", PatientName="Canary^Nameonly", **identity(1))).ok
        client.get_instance(identity(1)["SOPInstanceUID"])
        list(client.patient_studies("AUD-1"))
    time.sleep(0.2)  # outcome records are queued, not awaited
    records = audit_records(daemon)
    actions = [(r["action"], r["phase"]) for r in records]
    # An instance that fits one message is stored with PutInstance and read with ReadInstance.
    assert ("PutInstance", "end") in actions and ("ReadInstance", "begin") in actions
    store_end = next(r for r in records if r["action"] == "PutInstance" and r["phase"] == "end")
    assert store_end["sop_instance_uid"] == identity(1)["SOPInstanceUID"] and store_end["outcome"] == "OK"
    assert all(r["principal"] == "local:loopback" for r in records)
    by_patient = audit_records(daemon, "--patient-id", "AUD-1")
    # The search is itself an access to that patient's records, and recorded as one.
    assert [r["action"] for r in by_patient] == ["PutInstance", "ListPatientStudies", "ListPatientStudies",
                                                 "QueryAudit"]
    verified = run_cli(daemon.target, "audit", "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["intact"]
    # Names never reach the trail or the operational log; the trail keeps identifiers only,
    # and sealed (encryption is on by default), so not even those are on the disk in the clear.
    trail = (daemon.data_dir / "audit" / "trail.jsonl").read_text()
    assert "Canary" not in trail and "Canary" not in daemon.log()
    assert "AUD-1" not in trail and identity(1)["SOPInstanceUID"] not in trail


def test_a_changed_record_is_named_by_the_cli(daemon: Daemon) -> None:
    with daemon.client() as client:
        for n in range(3):
            assert client.store(dicom_bytes(**identity(n))).ok
    daemon.stop()
    path = daemon.data_dir / "audit" / "trail.jsonl"
    data = path.read_bytes().splitlines(keepends=True)
    line = json.loads(data[2])
    sealed = line["sealed"]
    middle = len(sealed) // 2
    line["sealed"] = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    data[2] = json.dumps(line, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(data))
    daemon.start()
    result = run_cli(daemon.target, "audit", "verify")
    assert result.returncode == 1 and result.stdout.startswith("TAMPERED: record 3:")


def test_phi_calls_fail_closed_when_the_trail_cannot_be_written(daemon_factory, tmpfs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    disk = tmpfs("audit-disk", "256k")
    (tmp_path / "pv.toml").write_text(f'[audit]\npath = "{disk}/trail.jsonl"\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    with daemon.client() as client:
        assert client.store(dicom_bytes(**identity(1))).ok
        # The audit disk goes read-only, as ext4 does after I/O errors.
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        refused = client.store(dicom_bytes(**identity(2)))
        assert (refused.status, refused.code) == ("rejected", "UNAVAILABLE")
        with pytest.raises(grpc.RpcError) as info:
            client.get_instance(identity(1)["SOPInstanceUID"])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "audit trail" in info.value.details()
        assert client.serving_status() == "SERVING"  # health carries no patient data
        assert client.health().index.instances == 1, "the refused store changed nothing"
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert client.get_instance(identity(1)["SOPInstanceUID"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("audit-corpus"), patients=2, studies_per_patient=1,
                                  series_per_study=1, instances_per_series=3, seed=31)


def test_a_cut_trail_is_caught_against_the_peers_checkpoints(pair: Pair, corpus: list) -> None:  # noqa: F811
    store(pair.a, corpus)
    wait_drained(pair.a)
    pair.a.stop()  # a clean stop writes a final checkpoint, sent to the peer
    path = pair.a.data_dir / "audit" / "trail.jsonl"
    kept = path.read_bytes().splitlines(keepends=True)[:4]
    path.write_bytes(b"".join(kept))
    (path.with_name("trail.jsonl.checkpoints")).write_bytes(b"")  # the intruder removes local evidence too
    pair.a.start()
    result = run_cli(pair.a.target, "audit", "verify", "--json")
    body = json.loads(result.stdout)
    assert result.returncode == 1 and not body["intact"], body
    assert body["witness_checkpoints"] >= 1
    # After the 4 kept records come the ones written since the restart (this very
    # verification's own record among them); the cut shows right after them.
    assert body["first_bad_record"] <= len(kept) + 2
    assert "cut off" in body["problem"] or "checkpoint vouched" in body["problem"], body
