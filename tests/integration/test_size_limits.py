"""Messages over the size limits, and hostile IDs: the right status, nothing stored, nothing leaked.

"Nothing leaked" means: the status message quotes at most 100 characters of
the hostile input (as sent or repr-escaped), names no path of the daemon's
data dir and carries no traceback; and the daemon keeps serving with its
index unchanged.

Which status, by field:

* UID fields (GetInstance, GetSeries, GetStudy, GetStudyMetadata, Pin, Find's
  study/series UID filters): INVALID_ARGUMENT for every hostile value, since
  none of them is a valid UID; a valid but unknown UID is NOT_FOUND.
* Patient-ID fields (Prefetch, ListPatientStudies, Find's patient_id filter):
  control characters and more than 64 characters are INVALID_ARGUMENT.
  "../../etc/passwd" and "/etc/passwd" are legal DICOM LO values (the daemon
  never builds a path from a patient ID: blobs are content-addressed), so they
  are OK with nothing found, never NOT_FOUND.
* Pin.until, Find.page_token: INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pacsvault.v1 import archive_pb2, archive_pb2_grpc, storage_pb2, storage_pb2_grpc
from tests.conftest import Daemon, dicom_bytes, identity

StatusCode = grpc.StatusCode
MiB = 1 << 20
ECHO_LIMIT = 100
IDS = identity(0, root="1.2.826.0.1.3680043.10.79")
PATIENT = "SIZE-1"
BIG_CHANNEL = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]


@pytest.fixture(scope="module")
def limits_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("limits") / "appliance").start()
    with daemon.client() as client:
        assert client.store(dicom_bytes(**IDS, PatientID=PATIENT)).status == "stored"
    yield daemon
    if daemon.alive:
        daemon.kill()


def state(daemon: Daemon) -> tuple[int, ...]:
    with daemon.client() as client:
        assert client.serving_status() == "SERVING"
        i = client.health().index
    return i.patients, i.studies, i.series, i.instances, i.blobs


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def echoed(details: str, hostile: str) -> str:
    """The first run of more than ECHO_LIMIT characters of ``hostile`` that ``details`` quotes."""
    for form in (hostile, repr(hostile)[1:-1]):
        for at in range(0, max(len(details) - ECHO_LIMIT, 0)):
            window = details[at : at + ECHO_LIMIT + 1]
            if window in form:
                return window
    return ""


def assert_no_leak(daemon: Daemon, error: grpc.RpcError, hostile: str) -> None:
    details = error.details() or ""
    quoted = echoed(details, hostile)
    assert not quoted, f"the message quotes {len(details)} characters, among them the input: {details[:300]!r}"
    assert str(daemon.data_dir) not in details and "Traceback" not in details, details[:300]


# ---------------------------------------------------------------------------------------------
# One gRPC message over server.max_message_bytes.

def _store_stub(daemon: Daemon) -> archive_pb2_grpc.ArchiveServiceStub:
    return archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(daemon.target, options=BIG_CHANNEL))


def test_a_5_mib_store_chunk_is_resource_exhausted_and_stores_nothing(limits_daemon: Daemon) -> None:
    before = state(limits_daemon)
    # A real DICOM file of a new instance, padded into one 5 MiB message: were it let in, it would be stored.
    data = dicom_bytes(**identity(1, root="1.2.826.0.1.3680043.10.79"), PatientID=PATIENT,
                       ImageComments="x" * (5 * MiB))
    assert len(data) > 5 * MiB
    error = refused(lambda: _store_stub(limits_daemon).StoreInstance(
        iter([archive_pb2.StoreInstanceRequest(data=data)]), timeout=60))
    assert error.code() == StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
    assert "larger than max" in (error.details() or ""), error.details()
    assert state(limits_daemon) == before


def test_a_5_mb_unary_request_is_resource_exhausted(limits_daemon: Daemon) -> None:
    before = state(limits_daemon)
    stub = archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(limits_daemon.target, options=BIG_CHANNEL))
    hostile = "x" * 5_000_000
    error = refused(lambda: stub.Find(archive_pb2.FindRequest(
        level=archive_pb2.QUERY_LEVEL_STUDY, filter=archive_pb2.QueryFilter(patient_name=hostile)), timeout=30))
    assert error.code() == StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
    assert_no_leak(limits_daemon, error, hostile)
    assert state(limits_daemon) == before


def test_the_configured_max_message_bytes_is_the_one_enforced(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """3 MiB configured: a 3.5 MiB message (under gRPC's 4 MiB default) is refused, a 2 MiB one is read."""
    config = tmp_path / "small-messages.toml"
    config.write_text(f"[server]\nmax_message_bytes = {3 * MiB}\n")
    daemon = daemon_factory(config=config)
    before = state(daemon)
    stub = _store_stub(daemon)
    over = refused(lambda: stub.StoreInstance(
        iter([archive_pb2.StoreInstanceRequest(data=b"\x01" * (3 * MiB + MiB // 2))]), timeout=60))
    assert over.code() == StatusCode.RESOURCE_EXHAUSTED, (over.code(), over.details())
    under = refused(lambda: stub.StoreInstance(
        iter([archive_pb2.StoreInstanceRequest(data=b"\x01" * (2 * MiB))]), timeout=60))
    assert under.code() == StatusCode.INVALID_ARGUMENT, (under.code(), under.details())  # read, then not DICOM
    assert state(daemon) == before


def test_a_1_mb_patient_name_is_invalid_argument(limits_daemon: Daemon) -> None:
    before = state(limits_daemon)
    stub = archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(limits_daemon.target))
    hostile = "DOE^" + "J" * 1_000_000
    error = refused(lambda: stub.Find(archive_pb2.FindRequest(
        level=archive_pb2.QUERY_LEVEL_STUDY, filter=archive_pb2.QueryFilter(patient_name=hostile)), timeout=30))
    assert error.code() == StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert "patient_name" in (error.details() or "")
    assert_no_leak(limits_daemon, error, hostile)
    assert state(limits_daemon) == before


# ---------------------------------------------------------------------------------------------
# Hostile IDs on retrieve, pin, prefetch and find.

TRAVERSAL = {"traversal": "../../etc/passwd", "absolute path": "/etc/passwd",
             "windows traversal": "..\\..\\windows\\win.ini", "encoded traversal": "..%2f..%2fetc%2fpasswd"}
CONTROL = {"NUL": "1.2.3\x00.4", "newline": "1.2.3\n4", "escape": "\x1b[2J1.2.3", "DEL": "1.2.3\x7f",
           "C1 NEL": "1.2.3\x85", "NUL only": "\x00"}
NOT_C0 = ("DEL", "C1 NEL")
OVERSIZED = {"65 chars": "1." * 32 + "1", "10 KB": "1." * 5000 + "1", "100 KB of 9": "9" * 100_000,
             "100 KB traversal": "../" * 33_333}
HOSTILE = {**TRAVERSAL, **CONTROL, **OVERSIZED}


def _archive(daemon: Daemon) -> archive_pb2_grpc.ArchiveServiceStub:
    return archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(daemon.target))


def _find(**filter_fields: str) -> Callable[[archive_pb2_grpc.ArchiveServiceStub], Any]:
    return lambda a: a.Find(archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY,
                                                    filter=archive_pb2.QueryFilter(**filter_fields)), timeout=10)


UID_CALLS: dict[str, Callable[[str], Callable[[archive_pb2_grpc.ArchiveServiceStub], Any]]] = {
    "GetInstance": lambda v: lambda a: list(a.GetInstance(archive_pb2.GetInstanceRequest(sop_instance_uid=v),
                                                          timeout=10)),
    "GetSeries": lambda v: lambda a: list(a.GetSeries(archive_pb2.GetSeriesRequest(series_instance_uid=v),
                                                      timeout=10)),
    "GetStudy": lambda v: lambda a: list(a.GetStudy(archive_pb2.GetStudyRequest(study_instance_uid=v), timeout=10)),
    "GetStudyMetadata": lambda v: lambda a: list(a.GetStudyMetadata(
        archive_pb2.GetStudyMetadataRequest(study_instance_uid=v), timeout=10)),
    "Pin": lambda v: lambda a: a.Pin(archive_pb2.PinRequest(study_instance_uid=v, until="20991231"), timeout=10),
    "Find.study_instance_uid": lambda v: _find(study_instance_uid=v),
    "Find.series_instance_uid": lambda v: _find(series_instance_uid=v),
}
PATIENT_CALLS: dict[str, Callable[[str], Callable[[archive_pb2_grpc.ArchiveServiceStub], Any]]] = {
    "Prefetch": lambda v: lambda a: a.Prefetch(archive_pb2.PrefetchRequest(patient_id=v), timeout=10),
    "Prefetch.issuer": lambda v: lambda a: a.Prefetch(
        archive_pb2.PrefetchRequest(patient_id=PATIENT, issuer_of_patient_id=v), timeout=10),
    "ListPatientStudies": lambda v: lambda a: a.ListPatientStudies(
        archive_pb2.ListPatientStudiesRequest(patient_id=v), timeout=10),
    "Find.patient_id": lambda v: _find(patient_id=v),
    "Find.accession_number": lambda v: _find(accession_number=v),
}
OTHER_CALLS: dict[str, Callable[[str], Callable[[archive_pb2_grpc.ArchiveServiceStub], Any]]] = {
    "Pin.until": lambda v: lambda a: a.Pin(archive_pb2.PinRequest(study_instance_uid=IDS["StudyInstanceUID"],
                                                                  until=v), timeout=10),
    "Find.page_token": lambda v: lambda a: a.Find(archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY,
                                                                          page_token=v), timeout=10),
    "Find.study_date": lambda v: _find_date(v),
}


def _find_date(v: str) -> Callable[[archive_pb2_grpc.ArchiveServiceStub], Any]:
    return lambda a: a.Find(archive_pb2.FindRequest(
        level=archive_pb2.QUERY_LEVEL_STUDY,
        filter=archive_pb2.QueryFilter(study_date=archive_pb2.DateRange(start=v))), timeout=10)


def _cases() -> Iterator[Any]:
    for call in UID_CALLS:
        for name, value in HOSTILE.items():
            yield pytest.param(call, value, {StatusCode.INVALID_ARGUMENT}, id=f"{call}-{name}")
    for call in PATIENT_CALLS:
        for name, value in HOSTILE.items():
            # '/', '.', '\\' and '%' are legal in these DICOM strings: OK, with nothing found.
            expected = {StatusCode.OK} if name in TRAVERSAL else {StatusCode.INVALID_ARGUMENT}
            marks = []
            yield pytest.param(call, value, expected, id=f"{call}-{name}", marks=marks)
    for call in OTHER_CALLS:
        for name, value in HOSTILE.items():
            marks = []
            yield pytest.param(call, value, {StatusCode.INVALID_ARGUMENT}, id=f"{call}-{name}", marks=marks)


ALL_CALLS = {**UID_CALLS, **PATIENT_CALLS, **OTHER_CALLS}


@pytest.mark.parametrize(("call", "hostile", "expected"), list(_cases()))
def test_hostile_ids(limits_daemon: Daemon, call: str, hostile: str, expected: set[StatusCode]) -> None:
    before = state(limits_daemon)
    try:
        response = ALL_CALLS[call](hostile)(_archive(limits_daemon))
    except grpc.RpcError as error:
        assert error.code() in expected, (call, error.code(), (error.details() or "")[:300])
        assert_no_leak(limits_daemon, error, hostile)
    else:
        assert StatusCode.OK in expected, (call, "answered OK", str(response)[:300])
        # A legal but hostile-looking patient ID matches nothing and queues nothing.
        assert not getattr(response, "studies", None) and not getattr(response, "matches", None), response
        assert getattr(response, "studies_queued", 0) == 0, response
    assert state(limits_daemon) == before


def test_a_valid_unknown_uid_is_not_found_and_quoted_briefly(limits_daemon: Daemon) -> None:
    unknown = "1.2.826.0.1.3680043.10.79.404"
    for call in ("GetInstance", "GetSeries", "GetStudy", "GetStudyMetadata", "Pin"):
        error = refused(lambda: UID_CALLS[call](unknown)(_archive(limits_daemon)))  # noqa: B023
        assert error.code() == StatusCode.NOT_FOUND, (call, error.code(), error.details())
        assert unknown in (error.details() or "")


# ---------------------------------------------------------------------------------------------
# The storage admin calls take paths and names too.

def _storage(daemon: Daemon) -> storage_pb2_grpc.StorageServiceStub:
    return storage_pb2_grpc.StorageServiceStub(grpc.insecure_channel(daemon.target))


@pytest.mark.parametrize("path", ["/" + "a" * 300, "/nonexistent-pv/" + "a/" * 3000])
def test_add_volume_with_an_overlong_path_is_invalid_argument(limits_daemon: Daemon, path: str) -> None:
    before = state(limits_daemon)
    error = refused(lambda: _storage(limits_daemon).AddVolume(
        storage_pb2.AddVolumeRequest(tier="hot", path=path), timeout=10))
    assert state(limits_daemon) == before
    assert error.code() == StatusCode.INVALID_ARGUMENT, (error.code(), error.details())


STORAGE_ECHO = {
    "AddVolume.tier 5 KB": (lambda s: s.AddVolume(storage_pb2.AddVolumeRequest(tier="T" * 5000, path="/x"),
                                                  timeout=10), "T" * 5000),
    "AddVolume.tier 100 KB": (lambda s: s.AddVolume(storage_pb2.AddVolumeRequest(tier="T" * 100_000, path="/x"),
                                                    timeout=10), "T" * 100_000),
    "AddVolume.path 4 KB": (lambda s: s.AddVolume(storage_pb2.AddVolumeRequest(
        tier="hot", path="/nonexistent-pv/" + "a/" * 2000), timeout=10), "/nonexistent-pv/" + "a/" * 2000),
    "DrainVolume 5 KB": (lambda s: s.DrainVolume(storage_pb2.DrainVolumeRequest(volume="V" * 5000), timeout=10),
                         "V" * 5000),
    "DrainVolume 100 KB": (lambda s: s.DrainVolume(storage_pb2.DrainVolumeRequest(volume="V" * 100_000),
                                                   timeout=10), "V" * 100_000),
}


@pytest.mark.parametrize("case", list(STORAGE_ECHO))
def test_storage_calls_do_not_echo_oversized_input(limits_daemon: Daemon, case: str) -> None:
    call, hostile = STORAGE_ECHO[case]
    before = state(limits_daemon)
    error = refused(lambda: call(_storage(limits_daemon)))
    assert state(limits_daemon) == before
    assert error.code() == StatusCode.INVALID_ARGUMENT, (error.code(), (error.details() or "")[:200])
    assert_no_leak(limits_daemon, error, hostile)
