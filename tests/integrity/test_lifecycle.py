"""Retention, legal holds and safe deletion (issue 15, items 4 and 5): the trash, undelete, series
and instance deletion, purge after the grace period, min_days, holds here and at the peer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from pacsvault.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import Daemon, dicom_bytes, run_cli
from tests.integration.test_audit import audit_records
from tests.integration.test_replication_pair import blob_files, shard_files, wait_drained
from tests.integrity.pairs import make_pair

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.160"


def study(n: int, patient: str, study_date: str = "20240102", series: int = 2, per_series: int = 2) -> dict[str, bytes]:
    """One study of ``series`` x ``per_series`` instances: {sop uid: bytes}."""
    found = {}
    for s in range(series):
        for i in range(per_series):
            sop = f"{ROOT}.{n}.{s + 1}.{i + 1}"
            found[sop] = dicom_bytes(PatientID=patient, StudyDate=study_date, StudyInstanceUID=f"{ROOT}.{n}",
                                     SeriesInstanceUID=f"{ROOT}.{n}.{s + 1}", SOPInstanceUID=sop,
                                     Modality="CT" if s == 0 else "MR")
    return found


def store(daemon: Daemon, *studies: dict[str, bytes]) -> None:
    with daemon.client() as client:
        for one in studies:
            for data in one.values():
                assert client.store(data).ok


def configured(daemon_factory, tmp_path: Path, text: str, name: str = "appliance") -> Daemon:  # type: ignore[no-untyped-def]
    config = tmp_path / f"{name}.toml"
    config.write_text(text)
    return daemon_factory(name, config=config)


def studies_of(daemon: Daemon, patient: str) -> dict[str, dict]:
    with daemon.client() as client:
        return {m.study.study_instance_uid: {"instances": m.study.number_of_study_related_instances,
                                             "series": m.study.number_of_study_related_series,
                                             "modalities": sorted(m.study.modalities_in_study)}
                for m in client.find("study", patient_id=patient)}


def test_a_deleted_study_waits_in_the_trash_invisible_and_comes_back_whole(daemon: Daemon) -> None:
    kept, gone = study(1, "TRASH-1"), study(2, "TRASH-1")
    store(daemon, kept, gone)
    before = studies_of(daemon, "TRASH-1")
    files = len(blob_files(daemon))
    deleted = run_cli(daemon.target, "delete", f"{ROOT}.2", "--reason", "wrong patient", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "moved to the trash: 4 instances" in deleted.stdout and f"pacsvault undelete {ROOT}.2" in deleted.stdout
    assert set(studies_of(daemon, "TRASH-1")) == {f"{ROOT}.1"}
    with daemon.client() as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(f"{ROOT}.2.1.1")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.health().index.instances == 4
    assert len(blob_files(daemon)) == files, "nothing is destroyed during the grace period"
    listed = run_cli(daemon.target, "undelete", "--list", "--json")
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(i["level"], i["uid"], i["instances"], i["reason"]) for i in items] == [
        ("study", f"{ROOT}.2", 4, "wrong patient")]
    back = run_cli(daemon.target, "undelete", f"{ROOT}.2")
    assert back.returncode == 0 and "4 instances restored" in back.stdout
    assert studies_of(daemon, "TRASH-1") == before
    with daemon.client() as client:
        for sop, data in gone.items():
            assert client.get_instance(sop) == data
        assert client.health().index.instances == 8
    assert run_cli(daemon.target, "undelete", f"{ROOT}.2").returncode == 3, "nothing left in the trash"
    assert run_cli(daemon.target, "check").returncode == 0


def test_series_and_instances_are_rejected_and_restored_the_same_way(daemon: Daemon) -> None:
    one = study(3, "IOCM")
    store(daemon, one)
    assert run_cli(daemon.target, "delete", f"{ROOT}.3.2", "--level", "series", "--reason", "IOCM: wrong series",
                   "--yes").returncode == 0
    assert studies_of(daemon, "IOCM") == {f"{ROOT}.3": {"instances": 2, "series": 1, "modalities": ["CT"]}}
    assert run_cli(daemon.target, "delete", f"{ROOT}.3.1.2", "--level", "instance", "--reason", "IOCM: rejected",
                   "--yes").returncode == 0
    with daemon.client() as client:
        assert [m.instance.sop_instance_uid for m in client.find("instance", patient_id="IOCM")] == [f"{ROOT}.3.1.1"]
    # A corrected instance stored meanwhile under the rejected one's UID is kept when it comes back.
    corrected = dicom_bytes(PatientID="IOCM", StudyDate="20240102", StudyInstanceUID=f"{ROOT}.3",
                            SeriesInstanceUID=f"{ROOT}.3.1", SOPInstanceUID=f"{ROOT}.3.1.2", Modality="CT",
                            SeriesDescription="corrected")
    with daemon.client() as client:
        assert client.store(corrected).status == "stored"
    back = run_cli(daemon.target, "undelete", f"{ROOT}.3.1.2", "--level", "instance")
    assert back.returncode == 0 and "0 instances restored, 1 stored again meanwhile" in back.stdout
    with daemon.client() as client:
        assert client.get_instance(f"{ROOT}.3.1.2") == corrected
    assert run_cli(daemon.target, "undelete", f"{ROOT}.3.2", "--level", "series").returncode == 0
    assert studies_of(daemon, "IOCM") == {f"{ROOT}.3": {"instances": 4, "series": 2, "modalities": ["CT", "MR"]}}
    records = [r for r in audit_records(daemon) if r.get("phase") == "begin"]
    assert [r["action"] for r in records if r["action"] in ("DeleteSeries", "DeleteInstance", "Undelete")] == [
        "DeleteSeries", "DeleteInstance", "Undelete", "Undelete"]


def test_after_the_grace_period_the_trash_is_purged_for_good(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = configured(daemon_factory, tmp_path, "[retention]\nsoft_delete_days = 0.00005\npurge_interval_s = 0.5\n")
    gone = study(4, "PURGE")
    store(daemon, gone)
    assert run_cli(daemon.target, "delete", f"{ROOT}.4", "--reason", "expired", "--yes").returncode == 0
    deadline = time.monotonic() + 30
    while blob_files(daemon):
        assert time.monotonic() < deadline, "the trash was never purged"
        time.sleep(0.3)
    assert run_cli(daemon.target, "undelete", f"{ROOT}.4").returncode == 3
    assert run_cli(daemon.target, "check").returncode == 0


def test_min_days_refuses_deleting_younger_studies(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_ingest = configured(daemon_factory, tmp_path, "[retention]\nmin_days = 30\n", "by-ingest")
    store(by_ingest, study(5, "YOUNG"))
    refused = run_cli(by_ingest.target, "delete", f"{ROOT}.5", "--reason", "too soon", "--yes")
    assert refused.returncode == 6 and "FAILED_PRECONDITION" in refused.stderr and "min_days" in refused.stderr
    for level, uid in (("series", f"{ROOT}.5.1"), ("instance", f"{ROOT}.5.1.1")):
        assert run_cli(by_ingest.target, "delete", uid, "--level", level, "--reason", "x", "--yes").returncode == 6
    by_date = configured(daemon_factory, tmp_path, '[retention]\nmin_days = 30\nbasis = "study_date"\n', "by-date")
    store(by_date, study(6, "OLD", study_date="20000101"), study(7, "NEW", study_date=time.strftime("%Y%m%d")))
    assert run_cli(by_date.target, "delete", f"{ROOT}.6", "--reason", "old enough", "--yes").returncode == 0
    assert run_cli(by_date.target, "delete", f"{ROOT}.7", "--reason", "too new", "--yes").returncode == 6


def test_a_legal_hold_stops_every_delete_here_and_at_the_peer(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(daemon_factory, tmp_path, extra="[retention]\nsoft_delete_days = 0\n")
    held = study(8, "HOLD")
    store(pair.a, held)
    added = run_cli(pair.a.target, "hold", "add", f"{ROOT}.8", "--reason", "litigation 2026-17")
    assert added.returncode == 0, added.stderr
    listed = [json.loads(line) for line in run_cli(pair.a.target, "hold", "list", "--json").stdout.splitlines()]
    assert [(h["study_instance_uid"], h["reason"]) for h in listed] == [(f"{ROOT}.8", "litigation 2026-17")]
    for args in ((f"{ROOT}.8",), (f"{ROOT}.8.1", "--level", "series"), (f"{ROOT}.8.1.1", "--level", "instance")):
        refused = run_cli(pair.a.target, "delete", *args, "--reason", "no", "--yes")
        assert refused.returncode == 6 and "legal hold" in refused.stderr, refused.stderr
    wait_drained(pair.a)
    shards = len(shard_files(pair.b))
    # The peer keeps its copy whatever it is asked: a forged or mistaken DeleteReplicas is refused for it.
    stub = peer_pb2_grpc.PeerServiceStub(grpc.secure_channel(f"127.0.0.1:{pair.peer_ports['site-b']}",
                                                             grpc.ssl_channel_credentials(
        (pair.cert_dir / "ca.pem").read_bytes(), (pair.cert_dir / "site-a.key").read_bytes(),
        (pair.cert_dir / "site-a.pem").read_bytes())))
    answer = stub.DeleteReplicas(peer_pb2.DeleteReplicasRequest(instances=[
        peer_pb2.DeletedInstance(sop_instance_uid=sop, release_blob=True) for sop in held]), timeout=10)
    assert (answer.records_deleted, answer.records_held) == (0, 4)
    assert len(shard_files(pair.b)) == shards
    actions = [r["action"] for r in audit_records(pair.a) if r.get("phase") == "begin"]
    assert "AddLegalHold" in actions
    assert run_cli(pair.a.target, "hold", "remove", f"{ROOT}.8", "--reason", "settled").returncode == 0
    assert run_cli(pair.a.target, "delete", f"{ROOT}.8", "--reason", "settled", "--yes").returncode == 0
    wait_drained(pair.a)
    deadline = time.monotonic() + 30
    while len(shard_files(pair.b)) > shards - 4 * 6:  # the hold lifted there too, the peer forgets it
        assert time.monotonic() < deadline, len(shard_files(pair.b))
        time.sleep(0.3)


def test_the_trash_is_still_replicated_and_a_purge_tells_the_peer(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(daemon_factory, tmp_path, extra="[retention]\nsoft_delete_days = 0.0002\npurge_interval_s = 0.5\n")
    pair.b.stop()
    gone = study(9, "LATE", series=1)
    store(pair.a, gone)
    assert run_cli(pair.a.target, "delete", f"{ROOT}.9", "--reason", "mistake", "--yes").returncode == 0
    pair.b.start()  # it was deleted before it reached the peer: it still goes there, for the grace period
    deadline = time.monotonic() + 60
    while len(shard_files(pair.b)) < 2 * 6:
        assert time.monotonic() < deadline, len(shard_files(pair.b))
        time.sleep(0.2)
    while shard_files(pair.b) or blob_files(pair.a):  # and once purged (about 17 s), from both sides
        assert time.monotonic() < deadline + 30, (len(shard_files(pair.b)), len(blob_files(pair.a)))
        time.sleep(0.3)
