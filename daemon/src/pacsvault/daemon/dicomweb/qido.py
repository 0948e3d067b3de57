"""QIDO-RS (PS3.18 10.6): query parameters to ``Query``, matches to DICOM JSON.

Matching is Find's: PatientName with ``*`` and ``?`` (case-insensitive),
StudyDate as a date or a range, exact values elsewhere; a list of UIDs or
modalities runs one query per value. Keys the index cannot match on are
ignored with a ``Warning: 299`` header, as PS3.18 asks; a key that is no
DICOM attribute at all, or a value that cannot be right, is a 400.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from pacsvault.daemon.errors import InvalidInput, shown
from pacsvault.daemon.index.query import Level, Match, Query

# Query parameter (keyword) -> Query field.
_MATCHING = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientName": "patient_name",
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "AccessionNumber": "accession_number",
    "ModalitiesInStudy": "modality",
    "Modality": "modality",
}
_LISTS = ("study_instance_uid", "series_instance_uid", "modality")
_CONTROL = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
MAX_QUERIES = 64  # value lists multiply: at most this many queries from one request


@dataclass
class QidoRequest:
    queries: list[Query]
    limit: int
    offset: int
    sop_instance_uids: frozenset[str] = frozenset()  # instance level: only these
    warnings: list[str] = field(default_factory=list)


def keyword(key: str) -> str | None:
    """The DICOM keyword a query key names (a keyword, or a tag as 8 hex digits); None if neither."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        return keyword_for_tag(int(key, 16)) or None
    return key if tag_for_keyword(key) is not None else None


def parse(level: Level, params: Mapping[str, str] | list[tuple[str, str]], fixed: dict[str, str],
          max_results: int) -> QidoRequest:
    """``fixed``: the UIDs the path names (e.g. /studies/{uid}/series)."""
    values: dict[str, list[str]] = {k: [v] for k, v in fixed.items()}
    warnings: list[str] = []
    limit, offset, sop_uids = max_results, 0, frozenset[str]()
    items = params if isinstance(params, list) else list(params.items())
    for key, value in items:
        if key in _CONTROL:
            limit, offset = _control(key, value, limit, offset, max_results, warnings)
            continue
        name = keyword(key)
        if name is None:
            raise InvalidInput(f"query key {shown(key)} is neither a DICOM keyword nor a tag, nor one of "
                               "limit, offset, fuzzymatching, includefield")
        if not value:
            continue  # universal matching: return the attribute, match anything
        if name == "StudyDate":
            values["study_date"] = [value]
        elif name == "SOPInstanceUID" and level == Level.INSTANCE:
            sop_uids = frozenset(v.strip() for v in value.split(","))
        elif name in _MATCHING:
            target = _MATCHING[name]
            given = [v.strip() for v in value.split(",")] if target in _LISTS else [value]
            if target in fixed and set(given) != {fixed[target]}:
                raise InvalidInput(f"{name} {shown(value)} contradicts the UID in the path")
            values[target] = given
        else:
            warnings.append(f'299 pacsvault "the key {name} is not matched here: ignored"')
    queries = [Query(level, **_dates(dict(combo))) for combo in _combinations(values)]
    return QidoRequest(queries, limit, offset, sop_uids, warnings)


def _control(key: str, value: str, limit: int, offset: int, max_results: int,
             warnings: list[str]) -> tuple[int, int]:
    if key == "fuzzymatching":
        if value.lower() == "true":
            warnings.append('299 pacsvault "fuzzymatching is not supported: exact and wildcard matching used"')
        elif value.lower() != "false":
            raise InvalidInput(f"fuzzymatching must be true or false, not {shown(value)}")
    elif key == "includefield":
        for name in value.split(","):
            if name.strip() and name.strip() != "all" and keyword(name.strip()) is None:
                raise InvalidInput(f"includefield {shown(name)} is neither a DICOM keyword nor a tag")
    else:
        if not value.isdigit():
            raise InvalidInput(f"{key} must be a whole number, not {shown(value)}")
        if key == "offset":
            return limit, int(value)
        if int(value) > max_results:
            warnings.append(f'299 pacsvault "limit {value} is over the most this appliance returns '
                            f'at once ({max_results}); use offset for more"')
        return min(int(value), max_results), offset
    return limit, offset


def _combinations(values: dict[str, list[str]]) -> Iterator[list[tuple[str, str]]]:
    keys = list(values)
    combos = list(itertools.islice(itertools.product(*(values[k] for k in keys)), MAX_QUERIES + 1))
    if len(combos) > MAX_QUERIES:
        raise InvalidInput(f"the value lists ask for more than {MAX_QUERIES} queries; narrow them")
    for combo in combos:
        yield list(zip(keys, combo, strict=True))


def _dates(fields: dict[str, str]) -> dict[str, str]:
    if "modality" in fields:
        fields["modality"] = fields["modality"].upper()
    if "study_date" not in fields:
        return fields
    text = fields.pop("study_date")
    low, dash, high = text.partition("-")
    if not dash:
        high = low
    if not low and not high or any(d and not re.fullmatch(r"\d{8}", d) for d in (low, high)):
        raise InvalidInput(f"StudyDate {shown(text)} must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD "
                           "(either end may be left out)")
    fields["study_date_from"], fields["study_date_to"] = low, high
    return fields


def page_slice(matches: Iterator[Match], request: QidoRequest) -> tuple[list[Match], bool]:
    """The matches from ``offset`` on, at most ``limit``; and whether more were left."""
    if request.sop_instance_uids:
        matches = (m for m in matches if m.instance and m.instance.sop_instance_uid in request.sop_instance_uids)
    chosen = list(itertools.islice(matches, request.offset, request.offset + request.limit + 1))
    return chosen[: request.limit], len(chosen) > request.limit


# -- DICOM JSON of matches ------------------------------------------------------


def _value(vr: str, *values: object) -> dict[str, object]:
    present = [v for v in values if v not in ("", None)]
    if vr == "IS":  # JSON numbers (PS3.18 F.2.3)
        present = [int(v) if isinstance(v, str) and v.strip().lstrip("-").isdigit() else v for v in present]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def _name(name: str) -> dict[str, object]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]} if name else {"vr": "PN"}


def match_json(match: Match, level: Level, root: str) -> dict[str, object]:
    """One QIDO-RS result: the attributes the index holds for the level and those above it."""
    p = match.patient
    out: dict[str, object] = {
        "00080005": _value("CS", "ISO_IR 192"),
        "00100010": _name(p.patient_name),
        "00100020": _value("LO", p.patient_id),
        "00100021": _value("LO", p.issuer_of_patient_id),
        "00100030": _value("DA", p.patient_birth_date),
        "00100040": _value("CS", p.patient_sex),
    }
    s = match.study
    if s is not None:
        out |= {
            "00080020": _value("DA", s.study_date), "00080030": _value("TM", s.study_time),
            "00080050": _value("SH", s.accession_number), "00080056": _value("CS", "ONLINE"),
            "00080061": _value("CS", *s.modalities), "00080090": _name(s.referring_physician_name),
            "00081030": _value("LO", s.study_description), "0020000D": _value("UI", s.study_instance_uid),
            "00200010": _value("SH", s.study_id), "00201206": _value("IS", s.series_count),
            "00201208": _value("IS", s.instance_count),
        }
        study_url = f"{root}/studies/{s.study_instance_uid}"
        if level == Level.STUDY:
            out["00081190"] = _value("UR", study_url)
    se = match.series
    if se is not None and s is not None:
        series_url = f"{root}/studies/{s.study_instance_uid}/series/{se.series_instance_uid}"
        out |= {
            "00080060": _value("CS", se.modality), "0008103E": _value("LO", se.series_description),
            "0020000E": _value("UI", se.series_instance_uid), "00200011": _value("IS", se.series_number),
            "00201209": _value("IS", se.instance_count),
        }
        if level == Level.SERIES:
            out["00081190"] = _value("UR", series_url)
        i = match.instance
        if i is not None:
            out |= {
                "00080016": _value("UI", i.sop_class_uid), "00080018": _value("UI", i.sop_instance_uid),
                "00200013": _value("IS", i.instance_number), "00280008": _value("IS", i.number_of_frames or ""),
                "00020010": _value("UI", i.transfer_syntax_uid),
                "00081190": _value("UR", f"{series_url}/instances/{i.sop_instance_uid}"),
            }
    return dict(sorted(out.items()))


def result_key(match: Match, level: Level) -> str:
    """What makes a result unique at its level (results of several queries are joined)."""
    if level == Level.STUDY and match.study:
        return match.study.study_instance_uid
    if level == Level.SERIES and match.series:
        return match.series.series_instance_uid
    if match.instance:
        return match.instance.sop_instance_uid
    return ""

