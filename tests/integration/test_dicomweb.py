"""The DICOMweb door (PS3.18) against a real daemon with two workers, through dicomweb-client and plain HTTP.

dicomweb-client is a client nobody here wrote: what it stores by STOW-RS
comes back byte for byte by gRPC and WADO-RS, what gRPC stored comes back
byte for byte by WADO-RS, and its QIDO-RS queries find what gRPC's Find finds.
"""

from __future__ import annotations

import json
import time

import psutil
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.audit import atna
from tests.atna_support import validate
from tests.conftest import Daemon, dicom_bytes, identity, run_cli, source_file
from tests.dicomweb_support import encoded, multipart_parts, parsed

ROOT = "1.2.826.0.1.3680043.10.88"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"


def web(daemon: Daemon, token: str | None = None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return DICOMwebClient(f"{daemon.web_url}/dicom-web", headers=headers)


@pytest.fixture
def archive(daemon: Daemon) -> Daemon:
    """Three patients, four studies, stored over gRPC."""
    rows = [(1, "WEB-A", "Smith^Anna", "20240105", "CT", "ACC-1"),
            (2, "WEB-A", "Smith^Anna", "20240320", "MR", "ACC-2"),
            (3, "WEB-B", "Smythe^Bert", "20230611", "CT", "ACC-3"),
            (4, "WEB-C", "Jones^Carl", "20240201", "US", "ACC-4")]
    with daemon.client() as client:
        for n, patient, name, date, modality, accession in rows:
            for i in (1, 2):
                ids = identity(n, ROOT)
                ids["SOPInstanceUID"] = f"{ids['SeriesInstanceUID']}.{i}"
                result = client.store(dicom_bytes(PatientID=patient, PatientName=name, StudyDate=date,
                                                  Modality=modality, AccessionNumber=accession,
                                                  StudyDescription=f"study {n}", InstanceNumber=str(i), **ids))
                assert result.status == "stored", result
    return daemon


def study(n: int) -> str:
    return identity(n, ROOT)["StudyInstanceUID"]


def series(n: int) -> str:
    return identity(n, ROOT)["SeriesInstanceUID"]


def sop(n: int, i: int = 1) -> str:
    return f"{series(n)}.{i}"


def studies_of(results: list[dict]) -> list[str]:
    return sorted(r["0020000D"]["Value"][0] for r in results)


def test_qido_studies_matches_like_find(archive: Daemon) -> None:
    client = web(archive)
    assert studies_of(client.search_for_studies(search_filters={"PatientID": "WEB-A"})) == [study(1), study(2)]
    # Wildcards, case-insensitive, as Find.
    assert studies_of(client.search_for_studies(search_filters={"PatientName": "sm*"})) == \
        [study(1), study(2), study(3)]
    assert studies_of(client.search_for_studies(search_filters={"PatientName": "Sm?th^*"})) == [study(1), study(2)]
    assert studies_of(client.search_for_studies(search_filters={"StudyDate": "20240101-20240229"})) == \
        [study(1), study(4)]
    assert studies_of(client.search_for_studies(search_filters={"StudyDate": "20240201-"})) == [study(2), study(4)]
    assert studies_of(client.search_for_studies(search_filters={"StudyDate": "-20231231"})) == [study(3)]
    assert studies_of(client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == [study(1), study(3)]
    assert studies_of(client.search_for_studies(search_filters={"AccessionNumber": "ACC-4"})) == [study(4)]
    assert studies_of(client.search_for_studies(search_filters={"StudyInstanceUID": study(3)})) == [study(3)]
    # Tags work as keys too; a list of UIDs is any of them.
    assert studies_of(client.search_for_studies(search_filters={"0020000D": f"{study(2)},{study(4)}"})) == \
        [study(2), study(4)]
    assert studies_of(client.search_for_studies(search_filters={"PatientName": "smith^anna"},
                                                fuzzymatching=False)) == [study(1), study(2)]
    # Every result carries the attributes the share page and viewers list, and a RetrieveURL that resolves.
    (one,) = client.search_for_studies(search_filters={"StudyInstanceUID": study(1)},
                                      fields=["StudyDescription", "NumberOfStudyRelatedInstances"])
    assert one["00081030"]["Value"] == ["study 1"] and one["00201208"]["Value"] == [2]
    assert one["00080061"]["Value"] == ["CT"] and one["00100010"]["Value"] == [{"Alphabetic": "Smith^Anna"}]
    with PacsvaultClient(archive.target) as grpc_client:
        found = sorted(m.study.study_instance_uid for m in grpc_client.find("study", patient_name="sm*"))
    assert found == [study(1), study(2), study(3)]
    retrieved = requests.get(one["00081190"]["Value"][0], timeout=30)
    assert retrieved.status_code == 200 and len(multipart_parts(retrieved)) == 2


def test_qido_limit_offset_series_and_instances(archive: Daemon) -> None:
    client = web(archive)
    every = studies_of(client.search_for_studies())
    assert len(every) == 4
    pages = [studies_of(client.search_for_studies(limit=2, offset=offset)) for offset in (0, 2, 4)]
    assert sorted(pages[0] + pages[1]) == every and pages[2] == []
    series_found = client.search_for_series(study(2))
    assert [s["0020000E"]["Value"][0] for s in series_found] == [series(2)]
    assert series_found[0]["00080060"]["Value"] == ["MR"]
    assert sorted(s["0020000E"]["Value"][0] for s in client.search_for_series(search_filters={"Modality": "CT"})) \
        == [series(1), series(3)]
    instances = client.search_for_instances(study(1), series(1))
    assert sorted(i["00080018"]["Value"][0] for i in instances) == [sop(1, 1), sop(1, 2)]
    assert [i["00080018"]["Value"][0] for i in client.search_for_instances(
        search_filters={"SOPInstanceUID": sop(3, 2)})] == [sop(3, 2)]
    assert len(client.search_for_instances(study(4))) == 2


def test_wado_rs_answers_the_stored_bytes(archive: Daemon) -> None:
    with archive.client() as grpc_client:
        stored = {sop(n, i): grpc_client.get_instance(sop(n, i)) for n in (1, 2) for i in (1, 2)}
    base = f"{archive.web_url}/dicom-web"
    response = requests.get(f"{base}/studies/{study(1)}", timeout=30,
                            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 200
    parts = multipart_parts(response)
    assert sorted(data for _, data in parts) == sorted([stored[sop(1, 1)], stored[sop(1, 2)]])
    for headers, data in parts:
        assert headers["Content-Type"].startswith("application/dicom; transfer-syntax=")
        assert headers["Content-Location"].endswith(parsed(data).SOPInstanceUID)
    (headers, data), = multipart_parts(requests.get(f"{base}/studies/{study(2)}/series/{series(2)}/instances/"
                                                    f"{sop(2, 2)}", timeout=30))
    assert data == stored[sop(2, 2)]
    assert sorted(d for _, d in multipart_parts(requests.get(f"{base}/studies/{study(2)}/series/{series(2)}",
                                                              timeout=30))) == \
        sorted([stored[sop(2, 1)], stored[sop(2, 2)]])
    # dicomweb-client reads it back as the same dataset.
    assert web(archive).retrieve_instance(study(1), series(1), sop(1, 2)) == parsed(stored[sop(1, 2)])


def test_metadata_bulkdata_uris_and_frames_resolve(daemon: Daemon) -> None:
    big = bytes(range(256)) * 300  # over the 64 KiB inline threshold: a BulkDataURI
    with daemon.client() as client:
        data = dicom_bytes("CT_small.dcm", **identity(9, ROOT))
        dataset = parsed(data)
        dataset.add_new(0x00420011, "OB", big)  # Encapsulated Document, before the pixels
        nested = pydicom.Dataset()
        nested.add_new(0x00420011, "OB", big[::-1])
        dataset.add_new(0x00400275, "SQ", pydicom.Sequence([nested]))  # Request Attributes Sequence
        data = encoded(dataset)
        assert client.store(data).status == "stored"
    client = web(daemon)
    (metadata,) = client.retrieve_study_metadata(study(9))
    assert metadata["00080018"]["Value"] == [sop(9)] and "7FE00010" not in metadata
    top = metadata["00420011"]["BulkDataURI"]
    inner = metadata["00400275"]["Value"][0]["00420011"]["BulkDataURI"]
    assert top.startswith(f"{daemon.web_url}/dicom-web/studies/{study(9)}/") and top != inner
    assert client.retrieve_bulkdata(top) == [big]
    assert client.retrieve_bulkdata(inner) == [big[::-1]]
    assert client.retrieve_series_metadata(study(9), series(9)) == [metadata]
    assert client.retrieve_instance_metadata(study(9), series(9), sop(9)) == metadata
    # Frames of an uncompressed instance: slices of its pixel data.
    assert dataset.file_meta.TransferSyntaxUID == EXPLICIT_LITTLE
    (frame,) = client.retrieve_instance_frames(study(9), series(9), sop(9), [1])
    assert frame == dataset.PixelData


def test_stow_rs_by_dicomweb_client_retrieved_byte_for_byte_by_grpc_and_wado(daemon: Daemon) -> None:
    datasets = []
    for i in (1, 2, 3):
        ds = parsed(source_file("CT_small.dcm").read_bytes())
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study(20), series(20)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop(20, i)
        datasets.append(ds)
    client = web(daemon)
    result = client.store_instances(datasets)
    stored = {item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence}
    assert stored == {sop(20, i) for i in (1, 2, 3)} and "FailedSOPSequence" not in result
    with daemon.client() as grpc_client:
        for ds in datasets:
            assert grpc_client.get_instance(ds.SOPInstanceUID) == encoded(ds)
    response = requests.get(f"{daemon.web_url}/dicom-web/studies/{study(20)}", timeout=30)
    assert sorted(d for _, d in multipart_parts(response)) == sorted(encoded(ds) for ds in datasets)
    # Found by QIDO-RS, and by gRPC's Find.
    assert studies_of(client.search_for_studies(search_filters={"StudyInstanceUID": study(20)})) == [study(20)]
    # The same instance again is a success (a duplicate), as over gRPC.
    again = client.store_instances(datasets[:1])
    assert [i.ReferencedSOPInstanceUID for i in again.ReferencedSOPSequence] == [sop(20, 1)]


def test_share_token_narrows_dicomweb_as_over_grpc(archive: Daemon) -> None:
    with archive.client() as reader:
        grant = reader.create_share(study_instance_uid=study(1), ttl_seconds=600)
    assert grant.link == f"http://127.0.0.1:{archive.web_port}/share/{grant.token}"
    guest = web(archive, grant.token)
    assert studies_of(guest.search_for_studies()) == [study(1)]
    assert guest.search_for_studies(search_filters={"PatientID": "WEB-B"}) == []
    assert len(guest.retrieve_study(study(1))) == 2
    base = f"{archive.web_url}/dicom-web"
    headers = {"Authorization": f"Bearer {grant.token}"}
    # Outside the grant: 404, exactly as for a study that does not exist.
    assert requests.get(f"{base}/studies/{study(2)}", headers=headers, timeout=30).status_code == 404
    assert requests.get(f"{base}/studies/{study(3)}/metadata", headers=headers, timeout=30).status_code == 404
    # Read-only: the access table gives a share no StoreInstance.
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + dicom_bytes(**identity(30, ROOT)) + b"\r\n--b--\r\n"
    refused = requests.post(f"{base}/studies", data=body, timeout=30, headers={
        **headers, "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert refused.status_code == 403 and "StoreInstance" in refused.text
    assert requests.get(f"{base}/studies", headers={"Authorization": "Bearer pv_unknown"},
                        timeout=30).status_code == 401
    with archive.client() as reader:
        reader.revoke_share(grant.share.share_id)
    assert requests.get(f"{base}/studies", headers=headers, timeout=30).status_code == 401


def test_the_access_table_decides_and_the_audit_trail_records(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "pv.toml"
    config.write_text('[security]\nloopback_roles = ["ingest", "auditor"]\n')
    daemon = daemon_factory(config=config)
    with daemon.client() as client:
        assert client.store(dicom_bytes(PatientID="WEB-AUD", **identity(40, ROOT))).ok
    base = f"{daemon.web_url}/dicom-web"
    refused = requests.get(f"{base}/studies?PatientID=WEB-AUD", timeout=30)
    assert refused.status_code == 403 and "may not call Find" in refused.text
    assert requests.get(f"{base}/studies/{study(40)}", timeout=30).status_code == 403
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + dicom_bytes(**identity(41, ROOT)) + b"\r\n--b--\r\n"
    stored = requests.post(f"{base}/studies", data=body, timeout=30,
                           headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert stored.status_code == 200, stored.text
    time.sleep(0.3)  # outcome records are queued, not awaited
    result = run_cli(daemon.target, "audit", "query", "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    web_records = [r for r in records if r.get("door") == "dicomweb"]
    refusals = [r for r in web_records if r["phase"] == "refused"]
    assert {r["action"] for r in refusals} == {"Find", "GetStudy"}
    assert all(r["outcome"] == "PERMISSION_DENIED" and r["peer"].startswith("ipv4:127.0.0.1:") for r in refusals)
    store_end = [r for r in web_records if r["action"] == "StoreInstance" and r["phase"] == "end"]
    assert [r["sop_instance_uid"] for r in store_end] == [identity(41, ROOT)["SOPInstanceUID"]]
    assert store_end[0]["outcome"] == "OK" and store_end[0]["principal"] == "local:loopback"
    assert any(r["action"] == "StoreInstance" and r["phase"] == "begin" for r in web_records)
    assert run_cli(daemon.target, "audit", "verify").returncode == 0
    # ATNA export takes them unchanged: each is a valid DICOM audit message with the gRPC twin's event.
    exported = [r for r in web_records if r["phase"] != "begin"]  # begin records are no events
    assert len(exported) >= 3
    for r in exported:
        root = validate(atna.to_audit_message(r, "site-a"))
        expected = "110114" if r["phase"] == "refused" else atna.EVENTS[r["action"]].event_id.code
        assert root.find("EventIdentification/EventID").get("csd-code") == expected
        assert root.find("ActiveParticipant").get("NetworkAccessPointID") == "127.0.0.1"


def web_workers(daemon: Daemon) -> list[psutil.Process]:
    """The workers listening on the web port (and the API's)."""
    assert daemon.proc is not None
    found = []
    for child in psutil.Process(daemon.proc.pid).children():
        try:
            if "pacsvault.daemon.processes.worker" not in child.cmdline():
                continue
            listening = {c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
        if {daemon.web_port, daemon.port} <= listening:
            found.append(child)
    return found


def test_every_worker_serves_the_web_port_and_a_restarted_one_again(archive: Daemon) -> None:
    """SO_REUSEPORT like the API: each worker listens on the one port the supervisor reserved,
    and a worker started again after a crash binds it beside the others."""
    workers = web_workers(archive)
    assert len(workers) == 2
    url = f"{archive.web_url}/dicom-web/studies?limit=1"
    for _ in range(20):  # many connections, each answered
        with requests.Session() as session:
            assert session.get(url, timeout=30).status_code == 200
    workers[0].kill()
    answered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (answered < 20 or len(web_workers(archive)) < 2):
        try:
            with requests.Session() as session:
                answered += session.get(url, timeout=30).status_code == 200
        except requests.ConnectionError:
            pass  # a connection the dying worker had accepted
        time.sleep(0.05)
    again = web_workers(archive)
    assert answered >= 20 and len(again) == 2 and workers[0].pid not in {w.pid for w in again}


def test_the_door_can_be_turned_off(daemon_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "pv.toml"
    config.write_text("[web]\nenabled = false\n")
    daemon = daemon_factory(config=config)
    assert daemon.web_port == 0 and not daemon.web_port_file.exists()
    with daemon.client() as client:
        assert client.store(dicom_bytes(**identity(50, ROOT))).ok
        grant = client.create_share(study_instance_uid=identity(50, ROOT)["StudyInstanceUID"], ttl_seconds=60)
    assert grant.token and grant.link == ""  # no page to link to
    created = run_cli(daemon.target, "share", "create", "--study-uid", identity(50, ROOT)["StudyInstanceUID"])
    assert created.returncode == 0 and "link" not in created.stdout


def test_a_share_pin_travels_in_its_header(archive: Daemon) -> None:
    with archive.client() as reader:
        grant = reader.create_share(study_instance_uid=study(4), ttl_seconds=600, pin="8642")
    url = f"{archive.web_url}/dicom-web/studies"
    token = {"Authorization": f"Bearer {grant.token}"}
    assert requests.get(url, headers=token, timeout=30).status_code == 401
    answer = requests.get(url, headers={**token, "X-Pacsvault-Pin": "8642"}, timeout=30)
    assert answer.status_code == 200 and studies_of(answer.json()) == [study(4)]
