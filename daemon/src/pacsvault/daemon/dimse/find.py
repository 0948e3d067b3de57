"""C-FIND SCP, Patient Root and Study Root, all four levels: identifiers into ``Search.find`` queries.

Matching is Find's: PatientName with ``*`` and ``?`` (case-insensitive,
linear), exact PatientID, IssuerOfPatientID and AccessionNumber, StudyDate
as a date or a range (``A-B``, ``A-``, ``-B``), ModalitiesInStudy (study
level) or Modality (series level), list matching of UIDs; ``*`` alone, or
no value, matches anything. Wildcards anywhere but PatientName are refused
with a reason, as Find has no such matching. Every other key in the
identifier is a return key: the answer carries it, filled where the index
knows the value, empty otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import sop_class

from pacsvault.daemon.dimse import status
from pacsvault.daemon.dimse.guard import ARCHIVE, Guard
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index.query import Level, Match, Query
from pacsvault.daemon.search import Search

log = logging.getLogger(__name__)
FIND = ARCHIVE + "Find"
LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
LEVELS_BY_VALUE: dict[Level, str] = {v: k for k, v in LEVELS.items()}
STUDY_ROOT = {sop_class.StudyRootQueryRetrieveInformationModelFind, sop_class.StudyRootQueryRetrieveInformationModelMove,
              sop_class.StudyRootQueryRetrieveInformationModelGet}


@dataclasses.dataclass(frozen=True)
class Request:
    """What an identifier asks: one query per combination of its list values, and post-filters."""

    level: Level
    queries: list[Query]
    sop_instance_uids: frozenset[str]


def request_of(identifier: Dataset, information_model: str) -> Request:
    """The queries an identifier asks for; InvalidInput names what cannot be matched."""
    name = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if name not in LEVELS:
        raise InvalidInput(f"QueryRetrieveLevel {name!r} must be PATIENT, STUDY, SERIES or IMAGE")
    level = LEVELS[name]
    if level == Level.PATIENT and information_model in STUDY_ROOT:
        raise InvalidInput("the Study Root model has no PATIENT level")
    single = {"patient_id": _exact(identifier, "PatientID"),
              "issuer_of_patient_id": _exact(identifier, "IssuerOfPatientID"),
              "patient_name": _value(identifier, "PatientName"),
              "accession_number": _exact(identifier, "AccessionNumber")}
    single["study_date_from"], single["study_date_to"] = _date_range(_exact(identifier, "StudyDate"))
    base = Query(level, **single)
    queries = [base]
    modality_key = "ModalitiesInStudy" if level == Level.STUDY else "Modality"
    for field, values in (("study_instance_uid", _list(identifier, "StudyInstanceUID")),
                          ("series_instance_uid", _list(identifier, "SeriesInstanceUID")),
                          ("modality", [v.upper() for v in _list(identifier, modality_key)])):
        if values:
            queries = [dataclasses.replace(q, **{field: v}) for q in queries for v in values]
    if len(queries) > 1000:
        raise InvalidInput("the identifier's value lists ask for more than 1000 combinations")
    sops = frozenset(_list(identifier, "SOPInstanceUID")) if level == Level.INSTANCE else frozenset()
    return Request(level, queries, sops)


def _value(identifier: Dataset, keyword: str) -> str:
    element = identifier.get(keyword)
    if element is None or element == "":
        return ""
    value = element[0] if isinstance(element, MultiValue) and len(element) == 1 else element
    if isinstance(value, MultiValue):
        raise InvalidInput(f"{keyword} takes one value here, not a list")
    text = str(value).strip()
    return "" if text == "*" else text


def _exact(identifier: Dataset, keyword: str) -> str:
    text = _value(identifier, keyword)
    if "*" in text or "?" in text:
        raise InvalidInput(f"{keyword}: wildcards match in PatientName only; give a whole value or '*'")
    return text


def _list(identifier: Dataset, keyword: str) -> list[str]:
    element = identifier.get(keyword)
    if element is None or element == "":
        return []
    values = [str(v).strip() for v in (element if isinstance(element, MultiValue) else [element])]
    if any("*" in v or "?" in v for v in values):
        if values == ["*"]:
            return []
        raise InvalidInput(f"{keyword}: wildcards match in PatientName only; give whole values or '*'")
    return [v for v in values if v]


def _date_range(text: str) -> tuple[str, str]:
    if "-" not in text:
        return text, text
    start, _, end = text.partition("-")
    return start.strip(), end.strip()


def answer_of(match: Match, identifier: Dataset, level: str, retrieve_ae: str) -> Dataset:
    """The response identifier: every key asked for, filled where the index knows it."""
    values = _known_values(match)
    values["RetrieveAETitle"] = retrieve_ae
    values["InstanceAvailability"] = "ONLINE"
    answer = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for element in identifier:
            if element.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            if element.keyword in values:
                setattr(answer, element.keyword, values[element.keyword])
            else:
                answer.add_new(element.tag, element.VR, None)
        answer.QueryRetrieveLevel = level
        answer.RetrieveAETitle = retrieve_ae
        if any(isinstance(v, str) and not v.isascii() for v in values.values()):
            answer.SpecificCharacterSet = "ISO_IR 192"
    return answer


def _known_values(match: Match) -> dict[str, Any]:
    p = match.patient
    values: dict[str, Any] = {
        "PatientID": p.patient_id, "IssuerOfPatientID": p.issuer_of_patient_id, "PatientName": p.patient_name,
        "PatientBirthDate": p.patient_birth_date, "PatientSex": p.patient_sex,
        "NumberOfPatientRelatedStudies": p.study_count, "NumberOfPatientRelatedInstances": p.instance_count,
    }
    if (s := match.study) is not None:
        values |= {"StudyInstanceUID": s.study_instance_uid, "StudyDate": s.study_date, "StudyTime": s.study_time,
                   "AccessionNumber": s.accession_number, "StudyDescription": s.study_description,
                   "StudyID": s.study_id, "ReferringPhysicianName": s.referring_physician_name,
                   "ModalitiesInStudy": list(s.modalities), "NumberOfStudyRelatedSeries": s.series_count,
                   "NumberOfStudyRelatedInstances": s.instance_count}
    if (se := match.series) is not None:
        values |= {"SeriesInstanceUID": se.series_instance_uid, "Modality": se.modality,
                   "SeriesNumber": se.series_number or None, "SeriesDescription": se.series_description,
                   "NumberOfSeriesRelatedInstances": se.instance_count}
    if (i := match.instance) is not None:
        values |= {"SOPInstanceUID": i.sop_instance_uid, "SOPClassUID": i.sop_class_uid,
                   "InstanceNumber": i.instance_number or None, "NumberOfFrames": i.number_of_frames or None,
                   "AvailableTransferSyntaxUID": i.transfer_syntax_uid}
    return values


def matches(search: Search, request: Request, page_size: int) -> Iterator[Match]:
    """Every match of every query, each once, in the index's order per query."""
    seen: set[tuple[str, ...]] = set()
    for query in request.queries:
        token = ""
        while True:
            page, token = search.find(query, page_size, token)
            for match in page:
                key = _identity(match)
                if key in seen:
                    continue
                seen.add(key)
                if request.sop_instance_uids and (match.instance is None
                                                  or match.instance.sop_instance_uid not in request.sop_instance_uids):
                    continue
                yield match
            if not token:
                break


def _identity(match: Match) -> tuple[str, ...]:
    p = match.patient
    return (p.patient_id, p.issuer_of_patient_id,
            *(x for x in (getattr(match.study, "study_instance_uid", ""), getattr(match.series, "series_instance_uid", ""),
                          getattr(match.instance, "sop_instance_uid", "")) if x))


def audited_fields(request: Request) -> dict[str, object]:
    """What the audit record says was asked, as the gRPC Find's record says it."""
    fields: dict[str, object] = {"level": int(request.level)}
    for name in ("patient_id", "issuer_of_patient_id", "study_instance_uid", "series_instance_uid"):
        values = sorted({getattr(q, name) for q in request.queries} - {""})
        if len(values) == 1:
            fields[name] = values[0][:128]
        elif values:
            fields[name + "s"] = values[:100]
    return fields


class FindScp:
    def __init__(self, guard: Guard, search: Search, page_size: int, ae_title: str) -> None:
        self._guard, self._search, self._page_size, self._ae_title = guard, search, page_size, ae_title

    def on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        identifier = event.identifier
        count = 0
        try:
            request = request_of(identifier, str(event.request.AffectedSOPClassUID))
        except InvalidInput as exc:
            yield status.answer(status.UNABLE_TO_PROCESS, str(exc)), None
            return
        level = LEVELS_BY_VALUE[request.level]
        try:
            with self._guard.call(event.assoc, FIND, audited_fields(request), changes=False) as call:
                for match in matches(self._search, request, self._page_size):
                    if event.is_cancelled:
                        call.extra.update(messages=count, outcome="CANCELLED")
                        yield status.CANCEL, None
                        return
                    if not count:
                        call.released()  # the record is written before anything leaves
                    count += 1
                    yield status.PENDING, answer_of(match, identifier, level, self._ae_title)
                call.extra["messages"] = count
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, here
            answer = status.query_failure(exc)
            log.warning("C-FIND refused with 0x%04X: %s", answer.Status, exc)
            yield answer, None
            return
        yield status.SUCCESS, None


