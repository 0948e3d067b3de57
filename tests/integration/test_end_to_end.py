"""An integrator's day against a real pacsvaultd: store, find, retrieve, metadata, health."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from pacsvault.client import corpus as corpus_module
from tests.conftest import Daemon, dicom_bytes, identity, run_cli


def store_all(daemon: Daemon, corpus: list[corpus_module.GeneratedInstance]) -> list[dict]:
    root = corpus[0].path.parents[3]
    result = run_cli(daemon.target, "store", str(root), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_store_folder_then_everything_is_retrievable_byte_identical(
    daemon: Daemon, small_corpus: list[corpus_module.GeneratedInstance], tmp_path: Path
) -> None:
    rows = store_all(daemon, small_corpus)
    assert len(rows) == len(small_corpus)
    assert {r["status"] for r in rows} == {"stored"}
    for row in rows:
        assert set(row) >= {"path", "sop_instance_uid", "status", "digest", "message"}
        assert len(row["digest"]) == 64
    # Storing the same folder again: every instance a duplicate, nothing new.
    again = store_all(daemon, small_corpus)
    assert {r["status"] for r in again} == {"duplicate"}
    with daemon.client() as client:
        assert client.health().index.instances == len(small_corpus)
        for item in small_corpus:
            assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()
    one = small_corpus[0]
    out = tmp_path / "one.dcm"
    result = run_cli(daemon.target, "get", one.sop_instance_uid, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == one.path.read_bytes()


def test_get_study_streams_one_file_per_instance(
    daemon: Daemon, small_corpus: list[corpus_module.GeneratedInstance], tmp_path: Path
) -> None:
    store_all(daemon, small_corpus)
    study_uid = small_corpus[0].study_instance_uid
    members = {i.sop_instance_uid: i.path.read_bytes() for i in small_corpus if i.study_instance_uid == study_uid}
    result = run_cli(daemon.target, "get-study", study_uid, "-o", str(tmp_path / "study"))
    assert result.returncode == 0, result.stderr
    written = {p.name: p.read_bytes() for p in (tmp_path / "study").iterdir()}
    assert written == {f"{uid}.dcm": data for uid, data in members.items()}
    series_uid = small_corpus[0].series_instance_uid
    with daemon.client() as client:
        got = {a.sop_instance_uid: data for a, data in client.iter_series(series_uid)}
    assert got == {i.sop_instance_uid: i.path.read_bytes() for i in small_corpus if i.series_instance_uid == series_uid}


def find_json(daemon: Daemon, *args: str) -> list[dict]:
    result = run_cli(daemon.target, "find", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_find_by_every_key(daemon: Daemon, small_corpus: list[corpus_module.GeneratedInstance]) -> None:
    store_all(daemon, small_corpus)
    first = small_corpus[0]
    studies = find_json(daemon, "--level", "study", "--patient-id", first.patient_id)
    assert {s["StudyInstanceUID"] for s in studies} == {
        i.study_instance_uid for i in small_corpus if i.patient_id == first.patient_id}
    study = studies[0]
    assert set(study) >= {"PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "NumberOfStudyRelatedInstances"}
    assert study["NumberOfStudyRelatedInstances"] == sum(
        1 for i in small_corpus if i.study_instance_uid == study["StudyInstanceUID"])
    assert [s["StudyInstanceUID"] for s in find_json(daemon, "--study-uid", first.study_instance_uid)] == [
        first.study_instance_uid]
    by_accession = find_json(daemon, "--accession", study["AccessionNumber"])
    assert [s["StudyInstanceUID"] for s in by_accession] == [study["StudyInstanceUID"]]
    date = study["StudyDate"]
    in_range = find_json(daemon, "--study-date", f"{date}-{date}")
    assert study["StudyInstanceUID"] in {s["StudyInstanceUID"] for s in in_range}
    assert all(s["StudyDate"] == date for s in in_range)
    series = find_json(daemon, "--level", "series", "--study-uid", first.study_instance_uid)
    assert {s["SeriesInstanceUID"] for s in series} == {
        i.series_instance_uid for i in small_corpus if i.study_instance_uid == first.study_instance_uid}
    modality = series[0]["Modality"]
    assert all(s["Modality"] == modality for s in find_json(daemon, "--level", "series", "--modality", modality))
    instances = find_json(daemon, "--level", "instance", "--study-uid", first.study_instance_uid)
    assert {i["SOPInstanceUID"] for i in instances} == {
        i.sop_instance_uid for i in small_corpus if i.study_instance_uid == first.study_instance_uid}
    patients = find_json(daemon, "--level", "patient")
    assert len(patients) == len({i.patient_id for i in small_corpus})


def test_find_has_no_hidden_cap_and_limit_is_honoured(daemon: Daemon, tmp_path: Path) -> None:
    corpus = corpus_module.generate(tmp_path / "c", patients=130, studies_per_patient=1, series_per_study=1,
                                    instances_per_series=1, seed=3,
                                    sources={Path(pydicom.data.__file__).parent / "test_files" / "MR_small.dcm": 1})
    with daemon.client() as client:
        assert all(client.store_file(i.path).status == "stored" for i in corpus)
        # Pages of 100 by default: 130 studies need two pages, and all come back.
        assert len(list(client.find("study"))) == 130
        assert len(list(client.find("study", page_size=7))) == 130
    assert len(find_json(daemon, "--limit", "5")) == 5


def test_patient_studies_with_and_without_issuer(daemon: Daemon) -> None:
    with daemon.client() as client:
        for n, issuer in enumerate(["HOSP-A", "HOSP-A", "HOSP-B", ""]):
            data = dicom_bytes(PatientID="MRN-42", IssuerOfPatientID=issuer, **identity(n))
            assert client.store(data).status == "stored"
        everyone = list(client.patient_studies("MRN-42"))
        assert len(everyone) == 4
        hosp_a = list(client.patient_studies("MRN-42", "HOSP-A"))
        assert {m.study.study_instance_uid for m in hosp_a} == {identity(0)["StudyInstanceUID"],
                                                                 identity(1)["StudyInstanceUID"]}
        assert all(m.patient.issuer_of_patient_id == "HOSP-A" for m in hosp_a)
        assert list(client.patient_studies("MRN-404")) == []


def test_study_metadata_is_dicom_json_without_pixel_data(
    daemon: Daemon, small_corpus: list[corpus_module.GeneratedInstance]
) -> None:
    store_all(daemon, small_corpus)
    study_uid = small_corpus[0].study_instance_uid
    result = run_cli(daemon.target, "metadata", study_uid)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    expected = {i.sop_instance_uid for i in small_corpus if i.study_instance_uid == study_uid}
    assert {obj["00080018"]["Value"][0] for obj in model} == expected
    for obj in model:
        assert "7FE00010" not in obj  # pixel data is not part of metadata
        assert obj["0020000D"] == {"vr": "UI", "Value": [study_uid]}
        assert obj["00100010"]["vr"] == "PN"
        assert "Alphabetic" in obj["00100010"]["Value"][0]


def test_non_ascii_names_round_trip_through_find(daemon: Daemon) -> None:
    cases = [("ISO_IR 192", "山田^太郎", 1), ("ISO_IR 100", "Müller^Jürgen", 2), ("ISO_IR 192", "Ødegård^Åse", 3)]
    with daemon.client() as client:
        for charset, name, n in cases:
            raw = dicom_bytes(SpecificCharacterSet=charset, PatientName=name, PatientID=f"NA-{n}", **identity(n))
            assert client.store(raw).status == "stored"
            if charset == "ISO_IR 100":
                assert name.encode("latin-1") in raw  # really Latin-1 on the wire
    for _, name, n in cases:
        found = find_json(daemon, "--patient-name", name[:2] + "*")
        assert [(f["PatientName"], f["StudyInstanceUID"]) for f in found] == [(name, identity(n)["StudyInstanceUID"])]
    assert [f["PatientName"] for f in find_json(daemon, "--patient-name", "MÜLLER^J?RGEN")] == ["Müller^Jürgen"]


def test_health_cli_and_standard_health_service(daemon: Daemon) -> None:
    result = run_cli(daemon.target, "health", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    body = json.loads(result.stdout)
    assert body["state"] == "healthy"
    assert body["serving"] == "SERVING"
    assert {v["tier"] for v in body["volumes"]} == {"hot", "capacity"}
    people = run_cli(daemon.target, "health")
    assert people.stdout.startswith("state: HEALTHY")
    with daemon.client() as client:
        assert client.serving_status() == "SERVING"
        assert client.serving_status("pacsvault.v1.ArchiveService") == "SERVING"
