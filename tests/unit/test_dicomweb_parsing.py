"""The DICOMweb door's translations that need no daemon: Accept headers, QIDO parameters, the access table."""

from __future__ import annotations

import pytest

from pacsvault.daemon.dicomweb import guard, qido
from pacsvault.daemon.dicomweb.media import NotAcceptable, accepted, json_choice, multipart_choice
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index.query import Level, Query
from pacsvault.daemon.security.access_table import METHOD_ROLES, Role


def test_every_route_is_a_method_of_the_access_table_readable_by_whom_grpc_allows() -> None:
    for method in guard.ROUTE_METHODS:
        assert method in METHOD_ROLES, method
    assert METHOD_ROLES[guard.STORE] == {Role.INGEST}
    assert all(Role.SHARE in METHOD_ROLES[m] for m in guard.READ_ONLY)


def test_accept_headers_with_quoted_parameters() -> None:
    header = 'multipart/related; type="application/dicom"; transfer-syntax=*, application/json;q=0'
    assert [r.type for r in accepted(header)] == ["multipart/related"]
    assert multipart_choice(header, "application/dicom", "x").params["transfer-syntax"] == "*"
    assert multipart_choice(None, "application/dicom", "x").params["type"] == "application/dicom"
    assert multipart_choice('multipart/related; type="*/*"', "application/octet-stream", "x")
    with pytest.raises(NotAcceptable):
        multipart_choice('multipart/related; type="image/jpeg"', "application/dicom", "x")
    assert json_choice("application/json", "x") == "application/dicom+json"
    with pytest.raises(NotAcceptable):
        json_choice("application/dicom+xml", "x")


def test_qido_parameters_become_find_queries() -> None:
    parsed = qido.parse(Level.STUDY, [("PatientName", "doe^j*"), ("00080020", "20240101-"),
                                      ("ModalitiesInStudy", "ct,MR"), ("limit", "5"), ("offset", "10"),
                                      ("includefield", "StudyDescription,00081030,all"),
                                      ("fuzzymatching", "false")], {}, 1000)
    assert parsed.limit == 5 and parsed.offset == 10 and not parsed.warnings
    assert parsed.queries == [
        Query(Level.STUDY, patient_name="doe^j*", modality=m, study_date_from="20240101", study_date_to="")
        for m in ("CT", "MR")]
    fixed = qido.parse(Level.SERIES, [], {"study_instance_uid": "1.2.3"}, 100)
    assert fixed.queries == [Query(Level.SERIES, study_instance_uid="1.2.3")] and fixed.limit == 100
    capped = qido.parse(Level.STUDY, [("limit", "5000"), ("StudyDescription", "x")], {}, 1000)
    assert capped.limit == 1000 and len(capped.warnings) == 2


@pytest.mark.parametrize("params", [[("Nonsense", "1")], [("StudyDate", "2024")], [("StudyDate", "-")],
                                    [("limit", "-1")], [("fuzzymatching", "yes")], [("includefield", "Bad")],
                                    [("StudyInstanceUID", ",".join(f"1.2.{i}" for i in range(9))),
                                     ("ModalitiesInStudy", ",".join(f"M{i}" for i in range(9)))]])
def test_bad_qido_parameters_are_refused(params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput):
        qido.parse(Level.STUDY, params, {}, 1000)


def test_a_path_uid_cannot_be_contradicted() -> None:
    with pytest.raises(InvalidInput, match="contradicts"):
        qido.parse(Level.SERIES, [("StudyInstanceUID", "9.9")], {"study_instance_uid": "1.2.3"}, 10)
