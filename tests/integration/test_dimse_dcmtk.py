"""The DIMSE door against dcmtk, clients nobody here wrote: echo, store, find, move, get.

A real multi-file corpus (pacsvault.client.corpus: CT, MR, US, NM, SC in
explicit / big endian, RLE, JPEG, JPEG-LS-free JPEG lossless and JPEG 2000)
goes in by storescu over one association, each file proposed in its own
transfer syntax, is found over gRPC, and comes back by movescu (to a dcmtk
storescp) and getscu, byte-identical.

How bytes are compared. DIMSE carries the data set only; every receiver
writes its own File Meta Information (storescp and getscu name themselves
as the implementation, pacsvault names the sending AE). So the File Meta
Information is compared by what identifies the instance (Media Storage SOP
Class and Instance UIDs, Transfer Syntax UID) and the data set after it
byte for byte; storescp and getscu run with +B, writing what they received
bit for bit. "What was stored" is what the daemon returns over gRPC. storescu
decodes each file and encodes it again to send it (it drops trailing
padding, may re-encode sequence lengths), so what it sends is not always the
source file: the same corpus is also sent to a dcmtk storescp (+B) as the
reference receiver, and pacsvault must have stored exactly what that one
received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from pacsvault.daemon.dicom.part10 import data_set
from tests import dcmtk
from tests.conftest import Daemon

pytestmark = pytest.mark.slow
PATIENT_ROOT, STUDY_ROOT = "-P", "-S"


@dataclasses.dataclass
class Site:
    daemon: Daemon
    dest_folder: Path
    work: Path
    corpus: list[corpus_module.GeneratedInstance]

    @property
    def port(self) -> int:
        return self.daemon.dicom_port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    dcmtk.require_dcmtk()
    work = tmp_path_factory.mktemp("dimse")
    made = corpus_module.generate(work / "corpus", patients=3, studies_per_patient=2, series_per_study=2,
                                  instances_per_series=3, seed=17)
    with dcmtk.storescp(work / "reference", "REFERENCE") as (reference_port, _):
        sent = dcmtk.store(reference_port, [m.path for m in made], work)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    with dcmtk.storescp(work / "dest") as (dest_port, received):
        config = work / "pv.toml"
        config.write_text(f'[dicom]\ndestinations = [{{ name = "DEST", host = "127.0.0.1", port = {dest_port} }}]\n')
        daemon = Daemon(work / "appliance", config).start()
        try:
            result = dcmtk.store(daemon.dicom_port, [m.path for m in made], work)
            assert result.returncode == 0, result.stdout + result.stderr
            yield Site(daemon, received, work, made)
        finally:
            daemon.stop()


def _stored(site: Site, sop_uid: str) -> bytes:
    with site.daemon.client() as client:
        return client.get_instance(sop_uid)


def _received_by_reference(site: Site) -> dict[str, bytes]:
    """SOP Instance UID -> the data set the reference storescp received from storescu."""
    return {str(pydicom.filereader.read_file_meta_info(p).MediaStorageSOPInstanceUID): data_set(p.read_bytes())
            for p in (site.work / "reference" / "received").iterdir()}


def _same_instance(received: Path, stored: bytes) -> None:
    ours = pydicom.filereader.read_file_meta_info(received)
    theirs = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True).file_meta
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        assert getattr(ours, keyword) == getattr(theirs, keyword), keyword
    assert data_set(received.read_bytes()) == data_set(stored)


def test_echo_answers_any_calling_ae_on_loopback(site: Site) -> None:
    done = dcmtk.run("echoscu", "-aet", "ANYONE", "-aec", "PACSVAULT", "127.0.0.1", str(site.port))
    assert done.returncode == 0, done.stderr


def test_what_storescu_sent_is_stored_and_found_over_grpc(site: Site) -> None:
    with site.daemon.client() as client:
        found = {m.instance.sop_instance_uid for m in client.find("instance")}
        assert found == {m.sop_instance_uid for m in site.corpus}
        reference = _received_by_reference(site)
        for made in site.corpus:
            stored = client.get_instance(made.sop_instance_uid)
            assert data_set(stored) == reference[made.sop_instance_uid], made.source
            meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True).file_meta
            assert meta.SourceApplicationEntityTitle == "MODALITY"  # the File Meta Information names the sender
            assert meta.TransferSyntaxUID == pydicom.filereader.read_file_meta_info(made.path).TransferSyntaxUID
        before = {m.sop_instance_uid: client.get_instance(m.sop_instance_uid) for m in site.corpus[:6]}
    # Sent again: identical instances, answered with success, nothing changes.
    again = dcmtk.store(site.port, [m.path for m in site.corpus[:6]], site.work)
    assert again.returncode == 0, again.stderr
    for sop, data in before.items():
        assert _stored(site, sop) == data


def test_findscu_patient_root_with_a_name_wildcard(site: Site) -> None:
    name = site.corpus[0].patient_name
    answers = dcmtk.find(site.port, PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT",
                                                   "PatientName": name.split("^")[0][:2].lower() + "*",
                                                   "PatientID": None, "NumberOfPatientRelatedStudies": None},
                         site.work / "find-patient")
    assert {a.PatientID for a in answers} == {m.patient_id for m in site.corpus if m.patient_name == name}
    assert all(a.NumberOfPatientRelatedStudies == 2 for a in answers)


def test_findscu_study_root_with_a_date_range_matches_grpc_find(site: Site) -> None:
    with site.daemon.client() as client:
        expected = {m.study.study_instance_uid for m in client.find("study", study_date="20200101-20231231")}
    answers = dcmtk.find(site.port, STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20200101-20231231",
                                                 "StudyInstanceUID": None, "ModalitiesInStudy": None,
                                                 "NumberOfStudyRelatedInstances": None, "PatientName": None},
                         site.work / "find-study")
    assert {a.StudyInstanceUID for a in answers} == expected
    assert all("20200101" <= a.StudyDate <= "20231231" and a.NumberOfStudyRelatedInstances == 6 for a in answers)


def test_findscu_series_and_image_levels(site: Site) -> None:
    made = site.corpus[0]
    series = dcmtk.find(site.port, STUDY_ROOT, {"QueryRetrieveLevel": "SERIES",
                                                "StudyInstanceUID": made.study_instance_uid,
                                                "SeriesInstanceUID": None, "Modality": None,
                                                "NumberOfSeriesRelatedInstances": None}, site.work / "find-series")
    assert {s.SeriesInstanceUID for s in series} == {m.series_instance_uid for m in site.corpus
                                                     if m.study_instance_uid == made.study_instance_uid}
    images = dcmtk.find(site.port, PATIENT_ROOT, {"QueryRetrieveLevel": "IMAGE", "PatientID": made.patient_id,
                                                  "StudyInstanceUID": made.study_instance_uid,
                                                  "SeriesInstanceUID": made.series_instance_uid,
                                                  "SOPInstanceUID": None, "SOPClassUID": None},
                        site.work / "find-image")
    assert sorted(i.SOPInstanceUID for i in images) == sorted(m.sop_instance_uid for m in site.corpus
                                                              if m.series_instance_uid == made.series_instance_uid)


def test_findscu_wildcards_outside_the_name_are_refused_with_a_reason(site: Site) -> None:
    done = dcmtk.run("findscu", "-d", STUDY_ROOT, "-aec", "PACSVAULT", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", "PatientID=PV*", "127.0.0.1", str(site.port))
    output = done.stdout + done.stderr
    assert "0xc000: Failed: Unable to process" in output and "wildcards match in PatientName only" in output


def test_movescu_sends_a_patient_to_storescp_byte_identical(site: Site) -> None:
    patient = site.corpus[0].patient_id
    wanted = [m for m in site.corpus if m.patient_id == patient]
    done = dcmtk.run("movescu", PATIENT_ROOT, "-aet", "VIEWER", "-aec", "PACSVAULT", "-aem", "DEST",
                     "-k", "QueryRetrieveLevel=PATIENT", "-k", f"PatientID={patient}", "127.0.0.1", str(site.port))
    assert done.returncode == 0, done.stdout + done.stderr
    received = {pydicom.filereader.read_file_meta_info(p).MediaStorageSOPInstanceUID: p
                for p in site.dest_folder.iterdir()}
    assert set(received) == {m.sop_instance_uid for m in wanted}
    for made in wanted:
        _same_instance(received[made.sop_instance_uid], _stored(site, made.sop_instance_uid))


def test_movescu_to_an_unknown_destination_is_refused(site: Site) -> None:
    done = dcmtk.run("movescu", "-v", STUDY_ROOT, "-aec", "PACSVAULT", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={site.corpus[0].study_instance_uid}", "127.0.0.1", str(site.port))
    assert "MoveDestinationUnknown" in done.stdout + done.stderr, done.stdout + done.stderr


def test_getscu_brings_every_series_back_byte_identical(site: Site) -> None:
    for series_uid in sorted({m.series_instance_uid for m in site.corpus}):
        members = [m for m in site.corpus if m.series_instance_uid == series_uid]
        syntax = str(pydicom.filereader.read_file_meta_info(members[0].path).TransferSyntaxUID)
        out = site.work / "get" / series_uid
        out.mkdir(parents=True)
        done = dcmtk.run("getscu", STUDY_ROOT, dcmtk.GETSCU_PREFER[syntax], "+B", "-aet", "VIEWER", "-aec", "PACSVAULT",
                         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={members[0].study_instance_uid}",
                         "-k", f"SeriesInstanceUID={series_uid}", "-od", str(out), "127.0.0.1", str(site.port))
        assert "Failed Suboperations    : 0" in done.stdout + done.stderr or done.returncode == 0, done.stderr
        got = {pydicom.filereader.read_file_meta_info(p).MediaStorageSOPInstanceUID: p for p in out.iterdir()}
        assert set(got) == {m.sop_instance_uid for m in members}, (syntax, done.stderr)
        for made in members:
            _same_instance(got[made.sop_instance_uid], _stored(site, made.sop_instance_uid))


def test_every_dimse_request_is_in_the_audit_trail_as_its_grpc_method(site: Site) -> None:
    made = site.corpus[0]
    dcmtk.find(site.port, STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": made.study_instance_uid},
               site.work / "find-audit")
    for level, key, value in (("SERIES", "SeriesInstanceUID", made.series_instance_uid),
                              ("STUDY", "StudyInstanceUID", made.study_instance_uid)):
        mover = ("movescu", "-aem", "DEST") if level == "STUDY" else ("getscu", "-od", str(site.work / "get-audit"))
        (site.work / "get-audit").mkdir(exist_ok=True)
        dcmtk.run(mover[0], STUDY_ROOT, *mover[1:], "-aec", "PACSVAULT", "-k", f"QueryRetrieveLevel={level}",
                  "-k", f"StudyInstanceUID={made.study_instance_uid}", "-k", f"{key}={value}",
                  "127.0.0.1", str(site.port))
    with PacsvaultClient(site.daemon.target) as client:
        records = [r for r in client.audit_query() if r.get("door") == "dimse"]
    stores = [r for r in records if r["action"] == "StoreInstance" and r["phase"] == "end"]
    assert {r["sop_instance_uid"] for r in stores} >= {m.sop_instance_uid for m in site.corpus}
    assert all(r["principal"] == "local:loopback" and r["calling_ae"] == "MODALITY" and r["outcome"] == "OK"
               and r["peer"].startswith("ipv4:127.0.0.1:") for r in stores)
    assert {"Find", "GetSeries"} <= {r["action"] for r in records}
    assert any(r["action"] == "GetStudy" and r.get("destination") == "DEST" for r in records)
