"""An object-store tier on the real Ceph, driving the archive and the mover directly: demotion,
promotion and a drain into the bucket, what the bucket holds, status, Object Lock retention, a
tier that is away or misconfigured at start, and SIGKILL at every step of a move either way."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pacsvault.client import corpus as corpus_module
from pacsvault.daemon import config as config_module
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, InvalidInput, Unavailable
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.records import BlobRecord
from pacsvault.daemon.integrity.rebuild import rebuild_index
from pacsvault.daemon.lifecycle import Lifecycle
from pacsvault.daemon.processes.in_process import InProcess
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.object_volume import ObjectStoreVolume
from pacsvault.daemon.storage.retention import Retention
from pacsvault.daemon.tiering import retention as retention_rules
from pacsvault.daemon.tiering.mover import STEPS
from tests.ceph_cluster import CephCluster
from tests.s3_support import new_bucket, plain_client, s3_tier, use_credentials_file

pytestmark = pytest.mark.slow
DAY = 86_400


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("s3-tier-corpus"), patients=3, studies_per_patient=2,
                                  series_per_study=1, instances_per_series=3, seed=19)


@pytest.fixture
def credentials(ceph: CephCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    use_credentials_file(ceph, monkeypatch)


def raw_config(tmp_path: Path, tiers: list[dict[str, Any]], **tiering: Any) -> dict[str, Any]:
    return {"data_dir": str(tmp_path / "data"), "tiering": {"mover_max_bytes_per_s": 1 << 30, **tiering},
            "tiers": tiers}


def hot_tier(*paths: Path) -> dict[str, Any]:
    return {"name": "hot", "volumes": [str(p) for p in paths], "reserve_bytes": 0, "high_watermark": 0.99,
            "low_watermark": 0.98}


def store_all(archive: InProcess, corpus: list[corpus_module.GeneratedInstance]) -> dict[str, bytes]:
    stored = {}
    for item in corpus:
        data = item.path.read_bytes()
        archive.store(data)
        stored[item.sop_instance_uid] = data
    return stored


def object_volume(archive: InProcess) -> ObjectStoreVolume:
    return next(v for v in archive.office.store.volumes if isinstance(v, ObjectStoreVolume))


def blob_objects(ceph: CephCluster, bucket: str) -> dict[str, int]:
    listed = plain_client(ceph).list_objects_v2(Bucket=bucket, Prefix="blobs/").get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


def check_consistent(archive: InProcess, expected: dict[str, bytes]) -> dict[str, int]:
    """Every instance reads back byte-identical from exactly one copy; the books add up; no move pending."""
    per_tier: dict[str, int] = {}
    for sop_uid, data in expected.items():
        _, blob = archive.catalog.instance(sop_uid)
        assert read_all(archive.worker.retrieval.open_blob(blob)) == data
        holders = [v.volume_id for v in archive.office.store.volumes if v.local.contains(_address(blob))]
        assert holders == [blob.location.volume_id], f"{sop_uid}: copies on {holders}"
        per_tier[blob.location.tier] = per_tier.get(blob.location.tier, 0) + 1
    for record in placement.volumes(archive.index):
        with archive.index.read() as txn:
            assert sum(1 for _ in placement.volume_blob_keys(txn, archive.index, record.volume_id)) == record.blob_count
    assert placement.move_intents(archive.index) == []
    return per_tier


def _address(blob: BlobRecord) -> Digest:
    return Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes)


def test_demotion_fills_the_bucket_with_sealed_blobs_and_a_read_brings_a_study_back(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    now = [time.time()]
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)],
                                                demote_after_days=1))
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    try:
        expected = store_all(archive, corpus)
        assert set(check_consistent(archive, expected)) == {"hot"}, "new data lands on the local tier"
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)
        assert check_consistent(archive, expected) == {"archive": len(expected)}
        objects = blob_objects(ceph, bucket)
        status = {v.tier: v for v in archive.tiering.status()}["archive"]
        assert status.backend == "s3" and status.state == "active" and status.capacity_bytes == 1 << 30
        assert status.blobs == len(objects) and status.stored_bytes == sum(objects.values())
        plain = plain_client(ceph)
        for key in objects:  # the sealed blobs as stored, named by address: no DICOM, no PHI
            assert key.startswith("blobs/blake3/") and len(key.rsplit("/", 1)[1]) == 64
            body = plain.get_object(Bucket=bucket, Key=key)
            assert body["Metadata"] == {}
            data = body["Body"].read()
            assert b"DICM" not in data and not any(i.patient_id.encode() in data for i in corpus)
        archive.tiering.check_volumes()  # the back office's look: bucket, marker, the listing
        listed = {v.tier: v for v in archive.tiering.status()}["archive"].store
        assert listed is not None and listed.objects == len(objects) and listed.object_lock is False
        assert listed.calls.calls > 0 and listed.calls.errors == 0
        study = corpus[0].study_instance_uid
        for instance, blob in archive.worker.retrieval.study_instances(study):
            archive.worker.retrieval.read(instance, blob)  # a viewer opens it: it comes back up
        archive.worker.reads.flush()
        archive.mover.run_once(max_bytes=1 << 40)
        assert {b.location.tier for _, b in archive.catalog.study_instances(study)} == {"hot"}
        per_study = sum(1 for i in corpus if i.study_instance_uid == study)
        assert check_consistent(archive, expected) == {"hot": per_study, "archive": len(expected) - per_study}
        assert len(blob_objects(ceph, bucket)) == len(objects) - per_study
    finally:
        archive.close()


def test_a_disk_drains_into_the_object_store(ceph: CephCluster, credentials: None, tmp_path: Path,
                                             corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)]))
    archive = InProcess(config, tmp_path / "run")
    try:
        expected = store_all(archive, corpus)
        with pytest.raises(InvalidInput, match="object-store tier"):
            archive.tiering.add_volume("archive", str(tmp_path / "elsewhere"))
        hot = archive.office.store.tiers[0].volumes[0]
        archive.tiering.drain(hot.path)  # the object store is the other volume that can take its data
        archive.mover.run_once(max_bytes=1 << 40)
        record = next(r for r in placement.volumes(archive.index) if r.volume_id == hot.volume_id)
        assert record.state == "drained" and record.blob_count == 0
        assert check_consistent(archive, expected) == {"archive": len(expected)}
        assert len(blob_objects(ceph, bucket)) == len(expected)
    finally:
        archive.close()


class ShortRetention:
    """Keeps every blob a few seconds, and one study's under a legal hold."""

    def __init__(self, seconds: float, held_study: str) -> None:
        self.until, self.held_study = time.time() + seconds, held_study

    def for_blob(self, blob: BlobRecord) -> Retention:
        return Retention(self.until, blob.study_instance_uid == self.held_study)


def test_object_lock_keeps_moved_blobs_until_their_retention_and_hold(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph, object_lock=True)
    now = [time.time()]
    # No trash ([retention] soft_delete_days = 0): the delete below dooms its blobs at once.
    config = config_module.from_dict({**raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)],
                                                   demote_after_days=1), "retention": {"soft_delete_days": 0.0}})
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    held, released = corpus[0].study_instance_uid, corpus[-1].study_instance_uid
    rules = ShortRetention(8, held)
    archive.mover.retention = rules  # type: ignore[assignment]
    try:
        expected = store_all(archive, corpus)
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)
        volume = object_volume(archive)
        for _, blob in archive.catalog.study_instances(held) + archive.catalog.study_instances(released):
            state = volume.objects.lock_state(_address(blob))
            assert state.mode == "COMPLIANCE" and state.retain_until_epoch_s == pytest.approx(rules.until, abs=1)
            assert state.legal_hold == (blob.study_instance_uid == held)
        # Promoted, a held study's objects stay in the store: the index points at the local copy.
        placement.request_promotions(archive.index, {held: now[0]})
        archive.mover.run_once(max_bytes=1 << 40)
        assert {b.location.tier for _, b in archive.catalog.study_instances(held)} == {"hot"}
        kept = [volume.objects.contains(_address(b)) for _, b in archive.catalog.study_instances(held)]
        assert all(kept) and placement.move_intents(archive.index) == []
        # A hold lifted later reaches the objects already in the store (the integrity issue's hook).
        first_held = _address(archive.catalog.study_instances(held)[0][1])
        retention_rules.apply_hold(volume, first_held, False)
        assert not volume.objects.lock_state(first_held).legal_hold
        # A study deleted during its retention: the index forgets it, the store keeps its objects until then.
        released_blobs = [b for _, b in archive.catalog.study_instances(released)]
        archive.worker.deletion.delete_study(released, "test: retention")
        assert all(volume.objects.contains(_address(b)) for b in released_blobs)
        assert archive.catalog.doomed_blobs(), "kept doomed, to destroy when the store allows it"
        time.sleep(max(0.0, rules.until - time.time()) + 1.5)
        archive.office.deletion.destroy_doomed_blobs()
        assert not any(volume.objects.contains(_address(b)) for b in released_blobs)
        for sop_uid in [i.sop_instance_uid for i in corpus if i.study_instance_uid == released]:
            expected.pop(sop_uid)
        for sop_uid, data in expected.items():
            _, blob = archive.catalog.instance(sop_uid)
            assert read_all(archive.worker.retrieval.open_blob(blob)) == data
    finally:
        archive.close()


def test_legal_holds_in_the_index_reach_the_objects_moved_and_already_moved(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph, object_lock=True)
    now = [time.time()]
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)],
                                                demote_after_days=1))
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    lifecycle = Lifecycle(archive.index, False, on_hold=lambda study_uid, on: retention_rules.hold_study(
        archive.catalog, archive.worker.store, study_uid, on))
    first, last = corpus[0].study_instance_uid, corpus[-1].study_instance_uid
    try:
        store_all(archive, corpus)
        # Held before the move: the mover's rules (from the config and the index) hold its objects.
        lifecycle.add_hold(first, "litigation 2026-117", "test")
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)
        volume = object_volume(archive)
        for study, held in ((first, True), (last, False)):
            for _, blob in archive.catalog.study_instances(study):
                assert blob.location.tier == "archive"
                assert volume.objects.lock_state(_address(blob)).legal_hold == held
        # Placed and lifted after the move: the objects already in the store follow the index.
        lifecycle.add_hold(last, "a second request", "test")
        assert all(volume.objects.lock_state(_address(b)).legal_hold for _, b in archive.catalog.study_instances(last))
        lifecycle.remove_hold(first, "released by the court")
        assert not any(volume.objects.lock_state(_address(b)).legal_hold
                       for _, b in archive.catalog.study_instances(first))
    finally:
        archive.close()


def test_an_index_lost_is_rebuilt_from_the_blobs_in_the_object_store_too(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    now = [time.time()]
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, new_bucket(ceph))],
                                                demote_after_days=1))
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    try:
        expected = store_all(archive, corpus)
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)
        tiers = {uid: archive.catalog.instance(uid)[1].location.tier for uid in expected}
        assert set(tiers.values()) == {"archive"}, tiers
    finally:
        archive.close()
    report = rebuild_index(config)
    assert report.instances_indexed == len(expected) and report.not_rebuilt == {}, report.not_rebuilt
    archive = InProcess(config, tmp_path / "run2", clock=lambda: now[0])
    try:
        for uid, data in expected.items():
            _, blob = archive.catalog.instance(uid)
            assert blob.location.tier == "archive"
            assert read_all(archive.worker.retrieval.open_blob(blob)) == data
    finally:
        archive.close()


def test_check_lists_an_object_no_record_names_and_repair_deletes_it(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    now = [time.time()]
    config = config_module.from_dict({**raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)],
                                                   demote_after_days=1), "integrity": {"orphan_grace_s": 0.0}})
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    try:
        expected = store_all(archive, corpus[:4])
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)
        checker = archive.office.integrity.checker
        assert checker.check().findings == []
        # A blob object no record names (a crash between the upload and the index switch, say).
        plain = plain_client(ceph)
        existing = sorted(blob_objects(ceph, bucket))[0]
        stray = existing.rsplit("/", 2)[0] + "/ab/" + "ab" * 32
        plain.copy_object(Bucket=bucket, Key=stray, CopySource={"Bucket": bucket, "Key": existing})
        found = checker.check().findings
        assert [(f.kind, f.subject) for f in found] == [("orphan", f"archive:{stray}")]
        repaired = checker.repair()
        assert [f.action for f in repaired.findings] == ["deleted"], repaired.findings
        assert stray not in blob_objects(ceph, bucket) and checker.check().findings == []
        for sop_uid, data in expected.items():
            _, blob = archive.catalog.instance(sop_uid)
            assert read_all(archive.worker.retrieval.open_blob(blob)) == data
    finally:
        archive.close()


def test_retention_rules_from_the_config_and_a_bucket_without_object_lock(
        ceph: CephCluster, credentials: None, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    blob = BlobRecord(created_at=1_000_000.0, study_instance_uid="1.2.3")
    assert retention_rules.from_config(config_module.Config()).for_blob(blob) is None  # no [retention] yet
    with_days = SimpleNamespace(retention=SimpleNamespace(min_days=30))
    assert retention_rules.from_config(with_days).for_blob(blob) == Retention(1_000_000.0 + 30 * DAY, False)
    held = retention_rules.from_config(config_module.Config(), held=lambda uid: uid == "1.2.3").for_blob(blob)
    assert held == Retention(None, True)
    bucket = new_bucket(ceph)  # no Object Lock: the blobs move, the store just cannot enforce the retention
    now = [time.time()]
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)],
                                                demote_after_days=1))
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    archive.mover.retention = ShortRetention(60, "")  # type: ignore[assignment]
    try:
        expected = store_all(archive, corpus[:3])
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)
        assert check_consistent(archive, expected) == {"archive": 3}
        assert "has no Object Lock" in caplog.text
    finally:
        archive.close()


def test_an_object_changed_behind_our_back_is_data_loss_and_is_quarantined(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)]))
    archive = InProcess(config, tmp_path / "run")
    try:
        expected = store_all(archive, corpus[:3])
        archive.tiering.drain(archive.office.store.tiers[0].volumes[0].path)
        archive.mover.run_once(max_bytes=1 << 40)
        sop_uid = corpus[0].sop_instance_uid
        instance, blob = archive.catalog.instance(sop_uid)
        volume = object_volume(archive)
        key = volume.objects.key_of(_address(blob))
        original = plain_client(ceph).get_object(Bucket=bucket, Key=key)["Body"].read()
        changed = bytearray(original)
        changed[-10] ^= 0x01
        plain_client(ceph).put_object(Bucket=bucket, Key=key, Body=bytes(changed))
        with pytest.raises(DataLoss, match=sop_uid):
            archive.worker.retrieval.read(instance, blob)
        moved = volume.objects.quarantine(_address(blob), "failed its digest check")  # what repair does first
        assert moved is not None and moved.startswith("quarantine/")
        head = plain_client(ceph).head_object(Bucket=bucket, Key=moved)
        assert head["Metadata"] == {"pacsvault-reason": "failed its digest check"}
        assert not volume.objects.contains(_address(blob))
        for other in corpus[1:3]:
            _, other_blob = archive.catalog.instance(other.sop_instance_uid)
            assert read_all(archive.worker.retrieval.open_blob(other_blob)) == expected[other.sop_instance_uid]
    finally:
        archive.close()


def test_a_missing_bucket_is_refused_at_start_then_taken_into_use_once_it_exists(
        ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = f"pv-later-{time.time_ns()}"
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)]))
    archive = InProcess(config, tmp_path / "run")
    try:
        status = {v.tier: v for v in archive.tiering.status()}["archive"]
        assert status.state == "refused" and f"bucket {bucket!r} does not exist" in status.reason
        health = archive.office.report.health()
        assert health.state == "critical" and any("does not exist" in r for r in health.reasons)
        store_all(archive, corpus[:2])  # ingest goes on, on the local tier
        plain_client(ceph).create_bucket(Bucket=bucket)
        archive.tiering.check_volumes()
        status = {v.tier: v for v in archive.tiering.status()}["archive"]
        assert status.state == "active" and status.accepts_writes
        assert archive.worker.store.refresh() is None and object_volume(archive).volume_id == status.volume_id
    finally:
        archive.close()


KILLER = """
import os, signal, sys, json
from pathlib import Path
from pacsvault.daemon import config as config_module
from pacsvault.daemon.processes import back_office
raw, step, run = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
office = back_office.build(config_module.from_dict(raw), run)
def on_step(name, digest, seen=[0]):
    if name == step:
        seen[0] += 1
        if seen[0] == 3:  # a few moves in, so finished moves and an interrupted one coexist
            os.kill(os.getpid(), signal.SIGKILL)
office.tiering.mover.on_step = on_step
office.tiering.mover.run_once(max_bytes=1 << 40)
print("finished without being killed")
"""


@pytest.mark.parametrize("direction", ["into the store", "out of the store"])
@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_every_step_of_a_move_loses_nothing(
        step: str, direction: str, ceph: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    raw = raw_config(tmp_path, [hot_tier(tmp_path / "hot"), s3_tier(ceph, bucket)])
    now = [time.time()]
    archive = InProcess(config_module.from_dict({**raw, "tiering": {**raw["tiering"], "demote_after_days": 1}}),
                        tmp_path / "run", clock=lambda: now[0])
    expected = store_all(archive, corpus)
    if direction == "into the store":
        archive.tiering.drain(archive.office.store.tiers[0].volumes[0].path)
    else:
        now[0] += 2 * DAY
        archive.mover.run_once(max_bytes=1 << 40)  # everything in the store first
        placement.request_promotions(archive.index, {i.study_instance_uid: now[0] for i in corpus})
    archive.close()
    result = subprocess.run([sys.executable, "-c", KILLER, json.dumps(raw), step, str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    archive = InProcess(config_module.from_dict(raw), tmp_path / "run")
    try:
        assert bool(placement.move_intents(archive.index)) == (step != "done")
        # Even before recovery, every instance reads back (the index points at a good copy).
        for sop_uid, data in expected.items():
            assert read_all(archive.worker.retrieval.open_blob(archive.catalog.instance(sop_uid)[1])) == data
        archive.mover.run_once(max_bytes=1 << 40)
        per_tier = check_consistent(archive, expected)
        where = "archive" if direction == "into the store" else "hot"
        assert per_tier == {where: len(expected)}
        assert len(blob_objects(ceph, bucket)) == (len(expected) if where == "archive" else 0)
    finally:
        archive.close()


@pytest.fixture
def gateway(ceph: CephCluster) -> Any:
    """The cluster, with its gateway running again after the test whatever the test did to it."""
    yield ceph
    ceph.start_gateway()


@pytest.mark.parametrize("direction", ["into the store", "out of the store"])
@pytest.mark.parametrize("step", STEPS[:-1])
def test_the_gateway_stopped_after_each_step_pauses_the_move_until_it_is_back(
        step: str, direction: str, gateway: CephCluster, credentials: None, tmp_path: Path,
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(gateway)
    now = [time.time()]
    quick = {"s3_timeout_s": 1.0, "s3_connect_timeout_s": 0.3, "s3_read_timeout_s": 0.5}
    config = config_module.from_dict(raw_config(tmp_path, [hot_tier(tmp_path / "hot"),
                                                           s3_tier(gateway, bucket, **quick)], demote_after_days=1))
    archive = InProcess(config, tmp_path / "run", clock=lambda: now[0])
    try:
        expected = store_all(archive, corpus[:9])
        now[0] += 2 * DAY
        if direction == "out of the store":
            archive.mover.run_once(max_bytes=1 << 40)
            placement.request_promotions(archive.index, {i.study_instance_uid: now[0] for i in corpus[:9]})
        stopped: list[str] = []

        def stop_after(name: str, digest: Digest) -> None:
            if name == step and not stopped:
                gateway.stop_gateway()
                stopped.append(name)

        archive.mover.on_step = stop_after
        archive.mover.run_once(max_bytes=1 << 40)
        assert stopped
        for sop_uid, data in expected.items():  # each instance reads, or says the store is away
            _, blob = archive.catalog.instance(sop_uid)
            try:
                assert read_all(archive.worker.retrieval.open_blob(blob)) == data
            except Unavailable as exc:
                assert blob.location.tier == "archive" and "archive" in str(exc)
        more = store_all(archive, corpus[9:11])  # ingest goes on
        archive.mover.on_step = lambda name, digest: None
        gateway.start_gateway()
        volume = object_volume(archive)
        wait_until(lambda: archive.tiering.check_volumes() is None and not volume.failed)
        archive.mover.run_once(max_bytes=1 << 40)
        per_tier = check_consistent(archive, {**expected, **more})
        assert per_tier == ({"archive": 9, "hot": 2} if direction == "into the store" else {"hot": 11})
    finally:
        archive.close()


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
