"""Bad DICOMweb requests: the status PS3.18 names, a message a person can act on, nothing stored
half, and the daemon keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.conftest import Daemon, dicom_bytes, identity
from tests.dicomweb_support import stow_body

ROOT = "1.2.826.0.1.3680043.10.89"
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=pv-test-boundary'


def ids(n: int) -> dict[str, str]:
    return identity(n, ROOT)


@pytest.fixture
def daemon(daemon_factory, tmp_path: Path) -> Daemon:  # type: ignore[no-untyped-def]
    config = tmp_path / "pv.toml"
    config.write_text("[web]\nmax_request_bytes = 300000\n")
    daemon = daemon_factory(config=config)
    with daemon.client() as client:
        assert client.store(dicom_bytes("CT_small.dcm", **ids(1))).ok  # explicit VR little endian
        assert client.store(dicom_bytes("JPEG2000.dcm", **ids(2))).ok  # compressed
    return daemon


def get(daemon: Daemon, path: str, accept: str | None = None) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(f"{daemon.web_url}{path}", headers=headers, timeout=30)


def stow(daemon: Daemon, body: bytes | object, content_type: str = STOW_TYPE, path: str = "/dicom-web/studies",
         **headers: str) -> requests.Response:
    return requests.post(f"{daemon.web_url}{path}", data=body, timeout=60,
                         headers={"Content-Type": content_type, **headers})


def stored_studies(daemon: Daemon) -> list[str]:
    with daemon.client() as client:
        return sorted(m.study.study_instance_uid for m in client.find("study"))


def test_bad_queries_are_400_naming_the_defect(daemon: Daemon) -> None:
    for query, words in [("StudyDate=2024-01-01", "StudyDate"), ("StudyDate=20241301", "not a date"),
                         ("StudyDate=20240301-20240101", "after end"), ("Bogus=1", "neither a DICOM keyword"),
                         ("limit=ten", "whole number"), ("offset=-1", "whole number"),
                         ("fuzzymatching=maybe", "true or false"), ("includefield=NoSuchThing", "includefield"),
                         ("StudyInstanceUID=1.2.abc", "UID")]:
        response = get(daemon, f"/dicom-web/studies?{query}")
        assert response.status_code == 400, (query, response.status_code, response.text)
        assert words in response.text, (query, response.text)
    assert get(daemon, "/dicom-web/studies/not..a.uid").status_code == 400
    assert get(daemon, f"/dicom-web/studies/{ids(1)['StudyInstanceUID']}/series/{ids(1)['SeriesInstanceUID']}"
                       f"/instances/{ids(1)['SOPInstanceUID']}/frames/0").status_code == 400
    # Unsupported but well-formed: answered, with a Warning header saying what was ignored.
    warned = get(daemon, "/dicom-web/studies?StudyDescription=x&fuzzymatching=true")
    assert warned.status_code == 200 and "StudyDescription" in warned.headers["Warning"]


def test_unknown_things_are_404(daemon: Daemon) -> None:
    one, two = ids(1), ids(2)
    instance = f"/dicom-web/studies/{one['StudyInstanceUID']}/series/{one['SeriesInstanceUID']}" \
               f"/instances/{one['SOPInstanceUID']}"
    for path in ["/dicom-web/studies/1.2.3.4.5", f"/dicom-web/studies/1.2.3.4.5/series/{one['SeriesInstanceUID']}",
                 f"/dicom-web/studies/{two['StudyInstanceUID']}/series/{one['SeriesInstanceUID']}",
                 "/dicom-web/studies/1.2.3.4.5/metadata", f"{instance}/frames/2", f"{instance}/bulkdata/7",
                 "/dicom-web/workitems", "/", "/share/pv_nosuchtoken", "/share/pv_x/other"]:
        response = get(daemon, path)
        assert response.status_code == 404, (path, response.status_code, response.text)


def test_what_cannot_be_given_is_406(daemon: Daemon) -> None:
    one, two = ids(1), ids(2)
    assert get(daemon, "/dicom-web/studies", "application/dicom+xml").status_code == 406
    study = f"/dicom-web/studies/{one['StudyInstanceUID']}"
    assert get(daemon, study, "image/jpeg").status_code == 406
    refused = get(daemon, study, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50')
    assert refused.status_code == 406 and "transfer-syntax=*" in refused.text
    assert get(daemon, study, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1') \
        .status_code == 200
    compressed = f"/dicom-web/studies/{two['StudyInstanceUID']}/series/{two['SeriesInstanceUID']}" \
                 f"/instances/{two['SOPInstanceUID']}/frames/1"
    response = get(daemon, compressed)
    assert response.status_code == 406 and "uncompressed" in response.text
    assert get(daemon, f"{study}/metadata", "application/dicom").status_code == 406


def test_stow_refusals_store_nothing(daemon: Daemon) -> None:
    before = stored_studies(daemon)
    good = dicom_bytes(**ids(10))
    body, _ = stow_body([good])
    for content_type in ("application/dicom", "application/json", 'multipart/related; type="application/dicom+json";'
                         " boundary=pv-test-boundary", "text/plain"):
        response = stow(daemon, body, content_type)
        assert response.status_code == 415, (content_type, response.text)
    jpeg_part = body.replace(b"Content-Type: application/dicom", b"Content-Type: image/jpeg")
    assert stow(daemon, jpeg_part).status_code == 415
    # Over web.max_request_bytes: declared (Content-Length) and streamed (chunked, no length).
    big, _ = stow_body([dicom_bytes(**ids(11 + i)) for i in range(60)])
    assert len(big) > 300000
    declared = stow(daemon, big)
    assert declared.status_code == 413 and "web.max_request_bytes" in declared.text
    chunked = stow(daemon, iter([big[at: at + 65536] for at in range(0, len(big), 65536)]))
    assert chunked.status_code == 413
    # Cut off before the closing boundary, or with no boundary at all: 400.
    assert stow(daemon, body[: len(body) // 2]).status_code == 400
    assert stow(daemon, body, 'multipart/related; type="application/dicom"').status_code == 400
    assert stow(daemon, b"", STOW_TYPE).status_code == 400
    assert stored_studies(daemon) == before
    # The daemon goes on serving.
    assert stow(daemon, body).status_code == 200
    assert ids(10)["StudyInstanceUID"] in stored_studies(daemon)


def test_stow_per_instance_failures(daemon: Daemon) -> None:
    not_dicom = b"this is not a DICOM file at all" * 10
    body, _ = stow_body([not_dicom])
    only_bad = stow(daemon, body)
    assert only_bad.status_code == 409
    (failed,) = only_bad.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000] and "00081199" not in only_bad.json()
    good = dicom_bytes(**ids(20))
    changed = dicom_bytes(PatientID="SOMEONE-ELSE", **ids(1))  # stored UID, other bytes
    mixed = stow(daemon, stow_body([good, not_dicom, changed])[0])
    assert mixed.status_code == 202
    answer = mixed.json()
    assert [i["00081155"]["Value"] for i in answer["00081199"]["Value"]] == [[ids(20)["SOPInstanceUID"]]]
    reasons = {tuple(i["00081155"].get("Value", [""]))[0]: i["00081197"]["Value"][0]
               for i in answer["00081198"]["Value"]}
    assert reasons == {"": 0xC000, ids(1)["SOPInstanceUID"]: 0x0111}
    # POST /studies/{uid} takes only that study's instances.
    other = stow(daemon, stow_body([dicom_bytes(**ids(21))])[0],
                 path=f"/dicom-web/studies/{ids(20)['StudyInstanceUID']}")
    assert other.status_code == 409
    assert other.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert ids(21)["StudyInstanceUID"] not in stored_studies(daemon)
    with daemon.client() as client:
        assert client.get_instance(ids(1)["SOPInstanceUID"]) == dicom_bytes("CT_small.dcm", **ids(1))


QUERY_KEYS = ["PatientID", "PatientName", "StudyDate", "ModalitiesInStudy", "AccessionNumber", "StudyInstanceUID",
              "SeriesInstanceUID", "SOPInstanceUID", "00100020", "includefield", "limit", "offset", "fuzzymatching",
              "StudyDescription", "x", ""]


def test_generated_queries_never_fail_the_daemon(daemon: Daemon) -> None:
    """Whatever a caller puts in a QIDO query: 200 or a 400 that says why, never a 500 or a dead door."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    session = requests.Session()
    levels = ["/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances",
              f"/dicom-web/studies/{ids(1)['StudyInstanceUID']}/series"]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.sampled_from(levels),
           st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=12),
                              st.text(max_size=40) | st.sampled_from(["*", "?", "-", ",", "1.2.3", "20240101-"])),
                    max_size=4))
    def one(path: str, params: list[tuple[str, str]]) -> None:
        response = session.get(f"{daemon.web_url}{path}", params=params, timeout=30)
        assert response.status_code in (200, 400), (params, response.status_code, response.text)
        if response.status_code == 400:
            assert response.text.strip(), params

    one()
    assert session.get(f"{daemon.web_url}/dicom-web/studies", timeout=30).status_code == 200


def test_generated_stow_bodies_store_nothing_and_never_fail_the_daemon(daemon: Daemon) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    before = stored_studies(daemon)
    session = requests.Session()
    good, _ = stow_body([dicom_bytes(**ids(60))])

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.binary(max_size=2048) | st.builds(lambda cut, junk: good[:cut] + junk,
                                                 st.integers(0, len(good) - 1), st.binary(max_size=64)))
    def one(body: bytes) -> None:
        response = session.post(f"{daemon.web_url}/dicom-web/studies", data=body, timeout=30,
                                headers={"Content-Type": STOW_TYPE})
        assert response.status_code in (400, 409), (body[:80], response.status_code, response.text)

    one()
    assert stored_studies(daemon) == before
    assert stow(daemon, good).status_code == 200


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=zz", "multipart/form-data",
                                          "application/x-www-form-urlencoded", "text/plain"])
def test_share_page_forms_that_are_no_forms_are_400_or_refused(daemon: Daemon, content_type: str) -> None:
    with daemon.client() as reader:
        grant = reader.create_share(study_instance_uid=ids(1)["StudyInstanceUID"], ttl_seconds=600, pin="1234")
    for path in (grant.link, f"{grant.link}/download"):
        response = requests.post(path, data=b"--zz\r\n\x00bad", headers={"Content-Type": content_type}, timeout=30)
        assert response.status_code in (400, 401, 404), (path, response.status_code, response.text)
    assert requests.get(grant.link, timeout=30).status_code == 200  # still there, asking for the PIN


def test_generated_retrieve_paths_and_accept_headers(daemon: Daemon) -> None:
    """Any path under the door and any Accept header: an answer PS3.18 names, never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    one_ = ids(1)
    instance = f"studies/{one_['StudyInstanceUID']}/series/{one_['SeriesInstanceUID']}/instances/{one_['SOPInstanceUID']}"
    segment = st.sampled_from([one_["StudyInstanceUID"], one_["SeriesInstanceUID"], "1.2.3", "x", "", "0", "1,2"]) \
        | st.text(alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), max_size=10)
    paths = st.sampled_from([instance, f"{instance}/frames", f"{instance}/bulkdata", f"{instance}/metadata",
                             f"studies/{one_['StudyInstanceUID']}", "studies"]).flatmap(
        lambda base: st.lists(segment, max_size=2).map(lambda extra: "/".join([base, *extra])))
    accept = st.none() | st.sampled_from(['multipart/related; type="application/dicom"; transfer-syntax=*',
                                          'multipart/related; type="application/octet-stream"', "*/*",
                                          "application/dicom+json", 'multipart/related; type=";,"']) \
        | st.text(alphabet=st.characters(codec="ascii", min_codepoint=32), max_size=40)
    session = requests.Session()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(paths, accept)
    def one(path: str, header: str | None) -> None:
        response = session.get(f"{daemon.web_url}/dicom-web/{path}", timeout=30,
                               headers={"Accept": header} if header is not None else {})
        assert response.status_code in (200, 400, 404, 405, 406), (path, header, response.status_code, response.text)

    one()
    assert session.get(f"{daemon.web_url}/dicom-web/{instance}", timeout=30).status_code == 200
