"""DeleteStudy through two real appliances: gone from the index, the disks and the peer,
its data keys destroyed first, the reason audited; bad requests refused; a crash redone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from pacsvault.daemon import config as config_module
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage import blob_format
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import FramedReader
from pacsvault.daemon.storage.local import FileReader
from tests.conftest import dicom_bytes, identity, run_cli
from pacsvault.daemon.processes.in_process import InProcess
from tests.integration.test_audit import audit_records
from tests.integration.test_replication_pair import Pair, shard_files, wait_drained
from tests.integrity.pairs import make_pair

ROOT = "1.2.826.0.1.3680043.10.99"


def two_studies(patient_id: str) -> dict[str, dict[str, bytes]]:
    """Two studies of one patient, two instances each: {study uid: {sop uid: bytes}}."""
    studies: dict[str, dict[str, bytes]] = {}
    for n in range(4):
        ids = identity(n, ROOT)
        ids["StudyInstanceUID"] = f"{ROOT}.{n // 2}"
        ids["SeriesInstanceUID"] = f"{ROOT}.{n // 2}.1"
        studies.setdefault(ids["StudyInstanceUID"], {})[ids["SOPInstanceUID"]] = dicom_bytes(
            PatientID=patient_id, PatientName="Delete^Me", **ids)
    return studies


def blob_paths(data_dir: Path) -> set[Path]:
    return {p for p in data_dir.glob("tiers/*/blobs/**/*") if p.is_file()}


@pytest.fixture
def purging_pair(daemon_factory, tmp_path: Path) -> Pair:  # type: ignore[no-untyped-def]
    """A pair that deletes for good at once ([retention] soft_delete_days = 0: no trash)."""
    return make_pair(daemon_factory, tmp_path, extra=NO_TRASH)


NO_TRASH = "[retention]\nsoft_delete_days = 0\n"


def test_a_deleted_study_is_gone_everywhere_and_its_keys_first(purging_pair: Pair, tmp_path: Path) -> None:
    pair = purging_pair
    studies = two_studies("DEL-1")
    gone_uid, kept_uid = sorted(studies)
    with pair.a.client() as client:
        for instances in studies.values():
            for data in instances.values():
                assert client.store(data).ok
    wait_drained(pair.a)
    shards_before = len(shard_files(pair.b))
    before = blob_paths(pair.a.data_dir)
    # Hard links stand in for the blocks a deleted file leaves on the disk.
    links = []
    for i, path in enumerate(sorted(before)):
        link = tmp_path / f"left-on-disk-{i}"
        os.link(path, link)
        links.append(link)

    refused = run_cli(pair.a.target, "delete", gone_uid, "--reason", "   ", "--yes")
    assert refused.returncode != 0 and "reason is required" in refused.stderr
    done = run_cli(pair.a.target, "delete", gone_uid, "--reason", "retention period expired", "--yes")
    assert done.returncode == 0, done.stderr
    assert "2 instances, 2 blobs destroyed" in done.stdout

    with pair.a.client() as client:
        for sop_uid in studies[gone_uid]:
            with pytest.raises(grpc.RpcError) as caught:
                client.get_instance(sop_uid)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        for sop_uid, data in studies[kept_uid].items():
            assert client.get_instance(sop_uid) == data
        assert [m.study.study_instance_uid for m in client.patient_studies("DEL-1")] == [kept_uid]
        with pytest.raises(grpc.RpcError) as again:
            client.delete_study(gone_uid, "twice")
        assert again.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(blob_paths(pair.a.data_dir)) == len(before) - 2

    # What the deleted files left behind holds no data key: unreadable even with the keyring.
    orphans = [link for link in links if os.stat(link).st_nlink == 1]
    assert len(orphans) == 2
    # Opened as the daemon would, with its keyring.
    sealer = BlobSealer(open_keys(config_module.Config(data_dir=str(pair.a.data_dir))))  # type: ignore[arg-type]
    for orphan in orphans:
        raw = orphan.read_bytes()
        header, slots = blob_format.decode(raw, str(orphan))
        assert slots == (None, None)
        fd = os.open(orphan, os.O_RDONLY)
        with pytest.raises(DataLoss, match="data key was destroyed"):
            read_all(FramedReader(FileReader(fd, len(raw), str(orphan)), str(orphan), sealer))

    # The peer forgets the instances and drops the shards of both blobs.
    wait_drained(pair.a)
    deadline = time.monotonic() + 20
    while len(shard_files(pair.b)) > shards_before - 2 * 6:
        assert time.monotonic() < deadline, (len(shard_files(pair.b)), shards_before)
        time.sleep(0.2)
    records = [r for r in audit_records(pair.a) if r.get("action") == "DeleteStudy" and r.get("phase") == "begin"]
    assert [r.get("reason") for r in records] == ["   ", "retention period expired", "twice"]


def test_deleting_the_last_study_removes_the_patient(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "no-trash.toml"
    config.write_text(NO_TRASH)
    daemon = daemon_factory("single", config=config)
    studies = two_studies("DEL-2")
    with daemon.client() as client:
        for instances in studies.values():
            for data in instances.values():
                assert client.store(data).ok
        for uid in studies:
            client.delete_study(uid, "test")
        assert list(client.patient_studies("DEL-2")) == []
        assert list(client.find("patient", patient_name="Delete^*")) == []
        assert client.health().index.instances == 0
    assert blob_paths(daemon.data_dir) == set()


def test_a_crash_between_the_commit_and_the_files_is_redone_at_start(tmp_path: Path) -> None:
    config = config_module.Config(data_dir=str(tmp_path / "data")).with_overrides()
    archive = InProcess(config, tmp_path / "run")
    studies = two_studies("DEL-3")
    for instances in studies.values():
        for data in instances.values():
            archive.store(data)
    uid = sorted(studies)[0]
    archive.catalog.delete_study(uid, time.time())  # committed; the daemon dies before destroying the files
    assert len(blob_paths(tmp_path / "data")) == 4
    archive.close()
    reopened = InProcess(config, tmp_path / "run")
    try:
        assert len(blob_paths(tmp_path / "data")) == 2
        assert reopened.catalog.doomed_blobs() == []
    finally:
        reopened.close()
