"""Every bad input gets the right status and a message a person can act on, and
costs nothing: the daemon keeps serving and the index stays exactly as it was."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pacsvault.v1 import archive_pb2, archive_pb2_grpc, common_pb2
from tests.conftest import Daemon, dicom_bytes, identity, pydicom_file

StatusCode = grpc.StatusCode


def stub(daemon: Daemon) -> archive_pb2_grpc.ArchiveServiceStub:
    return archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(daemon.target))


def chunks(data: bytes, size: int = 1 << 20) -> Iterator[archive_pb2.StoreInstanceRequest]:
    for at in range(0, max(len(data), 1), size):
        yield archive_pb2.StoreInstanceRequest(data=data[at : at + size])


def counts(daemon: Daemon) -> tuple[int, int, int, int, int]:
    with daemon.client() as client:
        i = client.health().index
        assert client.serving_status() == "SERVING"
    return i.patients, i.studies, i.series, i.instances, i.blobs


def rejected(daemon: Daemon, data: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub(daemon).StoreInstance(chunks(data), timeout=30)
    return info.value


@pytest.fixture
def baseline(daemon: Daemon) -> tuple[int, ...]:
    """One good instance stored first, so 'nothing changed' is a real claim."""
    with daemon.client() as client:
        assert client.store(dicom_bytes(**identity(0))).status == "stored"
    return counts(daemon)


BAD_FILES = {
    "not DICOM": (b"%PDF-1.7 this is a report, not an image" * 50, "no 'DICM' prefix"),
    "truncated in pixel data": (dicom_bytes(**identity(1))[:30000], "truncated DICOM file"),
    "truncated in header": (dicom_bytes(**identity(1))[:700], ""),
    "missing SOPInstanceUID": (dicom_bytes(**{**identity(1), "SOPInstanceUID": None}), r"SOPInstanceUID \(0008,0018\) is missing"),
    "missing StudyInstanceUID": (dicom_bytes(**{**identity(1), "StudyInstanceUID": None}), r"StudyInstanceUID \(0020,000D\) is missing"),
    "missing SeriesInstanceUID": (dicom_bytes(**{**identity(1), "SeriesInstanceUID": None}), r"SeriesInstanceUID \(0020,000E\) is missing"),
    "UID with letters": (dicom_bytes(**{**identity(1), "SOPInstanceUID": "1.2.3.abc"}), "not a valid UID"),
    "UID too long": (dicom_bytes(**{**identity(1), "StudyInstanceUID": "1.2." + "3" * 70}), "at most 64"),
    "UID with leading zero": (dicom_bytes(**{**identity(1), "SeriesInstanceUID": "1.2.03"}), "not a valid UID"),
    "PatientID with control characters": (dicom_bytes(**identity(1), PatientID="A\x00B\x07"), "control characters"),
    "study of another patient": (dicom_bytes(**{**identity(1), "StudyInstanceUID": identity(0)["StudyInstanceUID"]},
                                             PatientID="SOMEONE-ELSE"), "reconcile the patient identity"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_invalid_argument_and_change_nothing(daemon: Daemon, baseline: tuple, case: str) -> None:
    data, message = BAD_FILES[case]
    error = rejected(daemon, data)
    assert error.code() == StatusCode.INVALID_ARGUMENT
    assert message == "" or re.search(message, error.details()), error.details()
    assert counts(daemon) == baseline


def test_empty_upload(daemon: Daemon, baseline: tuple) -> None:
    error = rejected(daemon, b"")
    assert (error.code(), error.details()) == (StatusCode.INVALID_ARGUMENT, "empty upload: no bytes received")
    assert counts(daemon) == baseline


def test_expected_digest_mismatch_stores_nothing(daemon: Daemon, baseline: tuple) -> None:
    data = dicom_bytes(**identity(2))
    wrong = common_pb2.Digest(function=common_pb2.DIGEST_FUNCTION_BLAKE3, hash="00" * 32, size_bytes=len(data))
    requests = iter([archive_pb2.StoreInstanceRequest(data=data, expected_digest=wrong)])
    with pytest.raises(grpc.RpcError) as info:
        stub(daemon).StoreInstance(requests, timeout=30)
    assert info.value.code() == StatusCode.INVALID_ARGUMENT
    assert "does not match" in info.value.details()
    assert counts(daemon) == baseline


def test_same_uid_identical_bytes_is_duplicate_different_bytes_keeps_the_original(
    daemon: Daemon, baseline: tuple
) -> None:
    original = dicom_bytes(**identity(0))
    with daemon.client() as client:
        again = client.store(original)
        assert (again.status, again.message) == ("duplicate", "identical instance already stored")
        altered = dicom_bytes(**identity(0), PatientName="Changed^Name")
        result = client.store(altered)
        assert (result.status, result.code) == ("rejected", "ALREADY_EXISTS")
        assert "the stored version is kept" in result.message
        assert client.get_instance(identity(0)["SOPInstanceUID"]) == original
    assert counts(daemon) == baseline


def test_two_clients_storing_the_same_instance_at_once(daemon: Daemon, baseline: tuple) -> None:
    data = dicom_bytes(**identity(3))
    results: list[str] = []
    start = threading.Barrier(6)

    def store() -> None:
        with daemon.client() as client:
            start.wait()
            results.append(client.store(data).status)

    threads = [threading.Thread(target=store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["duplicate"] * 5 + ["stored"]
    p, st, se, i, b = baseline
    assert counts(daemon) == (p, st + 1, se + 1, i + 1, b + 1)


def test_client_that_disconnects_mid_upload_leaves_nothing(daemon: Daemon, baseline: tuple) -> None:
    data = dicom_bytes("RG3_UNCR.dcm", **identity(4)) if _has("RG3_UNCR.dcm") else dicom_bytes(**identity(4)) * 40
    sent = threading.Event()

    def slow_chunks() -> Iterator[archive_pb2.StoreInstanceRequest]:
        yield archive_pb2.StoreInstanceRequest(data=data[: 1 << 20])
        sent.set()
        time.sleep(30)  # never finishes: the client cancels first
        yield archive_pb2.StoreInstanceRequest(data=data[1 << 20 :])

    future = stub(daemon).StoreInstance.future(slow_chunks(), timeout=60)
    assert sent.wait(10)
    time.sleep(0.3)
    future.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    assert counts(daemon) == baseline
    # After a restart, no temp file of any write is left on any volume.
    daemon.stop()
    daemon.start()
    assert counts(daemon) == baseline
    assert list(daemon.data_dir.glob("tiers/*/tmp/*")) == []


def _has(name: str) -> bool:
    try:
        dicom_bytes(name)
    except FileNotFoundError:
        return False
    return True


def test_upload_over_the_configured_limit(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nmax_instance_bytes = 100000\n")
    daemon = daemon_factory(config=config)
    big = pydicom_file("MR_small.dcm") * 1  # 10 KB: fits
    with daemon.client() as client:
        assert client.store(big).status == "stored"
    error = rejected(daemon, b"\x00" * 300_000)
    assert error.code() == StatusCode.RESOURCE_EXHAUSTED
    assert "limits.max_instance_bytes (100000" in error.details()
    assert counts(daemon)[3] == 1


def test_queries_with_bad_filters(daemon: Daemon, baseline: tuple) -> None:
    archive = stub(daemon)
    cases = [
        (archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY,
                                 filter=archive_pb2.QueryFilter(study_date=archive_pb2.DateRange(start="20240101", end="20230101"))),
         "start 20240101 is after end 20230101"),
        (archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY,
                                 filter=archive_pb2.QueryFilter(study_date=archive_pb2.DateRange(start="2024-01-01"))),
         "YYYYMMDD"),
        (archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_UNSPECIFIED), "level must be one of"),
        (archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY, page_token="not-a-token"), "page_token"),
        (archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY, page_size=-1), "page_size"),
        (archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_PATIENT,
                                 filter=archive_pb2.QueryFilter(modality="CT")), "patient-level"),
    ]
    for request, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            archive.Find(request, timeout=10)
        assert info.value.code() == StatusCode.INVALID_ARGUMENT
        assert message in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        archive.ListPatientStudies(archive_pb2.ListPatientStudiesRequest(), timeout=10)
    assert (info.value.code(), info.value.details()) == (StatusCode.INVALID_ARGUMENT, "patient_id is required")
    assert counts(daemon) == baseline


def test_unknown_and_malformed_uids_on_retrieve(daemon: Daemon, baseline: tuple) -> None:
    archive = stub(daemon)
    calls = [
        lambda uid: list(archive.GetInstance(archive_pb2.GetInstanceRequest(sop_instance_uid=uid), timeout=10)),
        lambda uid: list(archive.GetSeries(archive_pb2.GetSeriesRequest(series_instance_uid=uid), timeout=10)),
        lambda uid: list(archive.GetStudy(archive_pb2.GetStudyRequest(study_instance_uid=uid), timeout=10)),
        lambda uid: list(archive.GetStudyMetadata(archive_pb2.GetStudyMetadataRequest(study_instance_uid=uid), timeout=10)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call("1.2.3.4.5.6.404")
        assert info.value.code() == StatusCode.NOT_FOUND
        assert "1.2.3.4.5.6.404" in info.value.details()
        for hostile in ["../../etc/passwd", "", "1.2\x00.3", "9" * 5000]:
            with pytest.raises(grpc.RpcError) as info:
                call(hostile)
            assert info.value.code() == StatusCode.INVALID_ARGUMENT
    assert counts(daemon) == baseline


def test_expired_deadline(daemon: Daemon, baseline: tuple) -> None:
    data = dicom_bytes(**identity(5))

    def slow() -> Iterator[archive_pb2.StoreInstanceRequest]:
        yield archive_pb2.StoreInstanceRequest(data=data[:1000])
        time.sleep(1.0)
        yield archive_pb2.StoreInstanceRequest(data=data[1000:])

    with pytest.raises(grpc.RpcError) as info:
        stub(daemon).StoreInstance(slow(), timeout=0.3)
    assert info.value.code() == StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.2)
    assert counts(daemon) == baseline
    with pytest.raises(grpc.RpcError) as info:
        list(stub(daemon).GetStudy(archive_pb2.GetStudyRequest(study_instance_uid=identity(0)["StudyInstanceUID"]),
                                   timeout=0.000001))
    assert info.value.code() == StatusCode.DEADLINE_EXCEEDED
    assert counts(daemon) == baseline


def test_full_index_is_resource_exhausted_and_the_daemon_keeps_serving(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "tiny-index.toml"
    config.write_text("[index]\nmap_size_bytes = 1048576\n")
    daemon = daemon_factory(config=config)
    stored = []
    with daemon.client() as client:
        for n in range(2000):
            result = client.store(dicom_bytes("MR_small.dcm", **identity(n), StudyDescription="x" * 60))
            if result.status != "stored":
                break
            stored.append(n)
        assert (result.status, result.code) == ("rejected", "RESOURCE_EXHAUSTED")
        assert "index.map_size_bytes" in result.message
        assert stored, "at least some instances fit"
        assert client.health().index.instances == len(stored)
        for n in stored[-5:]:
            assert client.get_instance(identity(n)["SOPInstanceUID"])
    assert counts(daemon)[3] == len(stored)


@pytest.fixture
def small_tmpfs(tmpfs) -> Path:  # type: ignore[no-untyped-def]
    return tmpfs("tiny-volume", "3m")


def test_full_disks_are_resource_exhausted_before_anything_is_acknowledged(
    daemon_factory, tmp_path: Path, small_tmpfs: Path  # type: ignore[no-untyped-def]
) -> None:
    config = tmp_path / "tiny-tiers.toml"
    config.write_text(f'[[tiers]]\nname = "hot"\nvolumes = ["{small_tmpfs}"]\nreserve_bytes = 0\n')
    daemon = daemon_factory(config=config)
    acknowledged = {}
    with daemon.client() as client:
        for n in range(400):
            data = dicom_bytes("emri_small.dcm" if _has("emri_small.dcm") else "CT_small.dcm", **identity(n))
            result = client.store(data)
            if result.status != "stored":
                break
            acknowledged[identity(n)["SOPInstanceUID"]] = data
        assert (result.status, result.code) == ("rejected", "RESOURCE_EXHAUSTED"), result
        assert "no tier has room" in result.message
        assert acknowledged
        for uid, data in acknowledged.items():
            assert client.get_instance(uid) == data
        assert client.health().index.instances == len(acknowledged)
    assert list(small_tmpfs.glob("tmp/*")) == []


def test_add_volume_refuses_foreign_directories_and_unnormalised_paths(daemon: Daemon, tmp_path: Path) -> None:
    """A volume is an empty directory (a freshly mounted filesystem) or a pacsvault volume, named plainly."""
    busy = tmp_path / "home-of-someone"
    busy.mkdir()
    (busy / "notes.txt").write_text("not ours")
    fresh = tmp_path / "fresh-disk"
    (fresh / "lost+found").mkdir(parents=True)  # what mkfs.ext4 leaves on a new filesystem
    cases = {
        str(busy): "not empty",
        f"{tmp_path}/x/../fresh-disk": "normal form",
        f"{fresh}/": "normal form",
        f"{tmp_path}/./fresh-disk": "normal form",
        f"{tmp_path}//fresh-disk": "normal form",
    }
    with daemon.client() as client:
        before = [v.path for v in client.list_volumes().volumes]
        for path, why in cases.items():
            with pytest.raises(grpc.RpcError) as refused:
                client.add_volume("hot", path)
            assert refused.value.code() == StatusCode.INVALID_ARGUMENT, (path, refused.value.details())
            assert why in (refused.value.details() or ""), (path, refused.value.details())
        assert str(fresh) in (refused.value.details() or "")  # the message gives the path to use instead
        assert [v.path for v in client.list_volumes().volumes] == before
        assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]  # no marker written into it
        assert sorted(p.name for p in fresh.iterdir()) == ["lost+found"]
        added = client.add_volume("hot", str(fresh))
        assert added.path == str(fresh) and added.state == "active"
        assert client.store(dicom_bytes(**identity(40))).status == "stored"
