"""Find: patient / study / series / instance queries with cursor pagination.

Each query picks the most selective index its filter allows, walks it in key
order and checks the remaining filters on each candidate. A page ends at a
position (a tuple of index keys); the page token carries that position and a
fingerprint of the query, so the next page resumes exactly after it, with no
result cap and no offset scans.

Keys hold tags, not PHI (see ``keys``), so lookups go by the tag of what is
asked and every candidate is checked against its opened record:

* PatientID: a prefix scan of the tag of the PatientID (every issuer), or
  the whole patient key when the issuer is given.
* Patient name: without wildcards, the tag of the normalised name; with a
  literal start of NAME_PREFIX_CHARS or more, the bucket of names that start
  the same way; otherwise every patient.
* Study date: the by_study_date buckets of the months that have studies and
  fall within the range, each study's opened date checked.

Positions are tags and UIDs, so page tokens carry no PHI either.
"""

from __future__ import annotations

import base64
import datetime
import enum
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TypeVar

import lmdb
from google.protobuf.message import Message

from pacsvault.daemon.dicom import uid
from pacsvault.daemon.dicom.parse import has_control_characters
from pacsvault.daemon.errors import InvalidInput, shown
from pacsvault.daemon.index import keys
from pacsvault.daemon.index.catalog import is_dicom_date, study_months
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.wildcard import NamePattern, has_wildcards
from pacsvault.daemon.digest import DigestFunction
from pacsvault.daemon.index.records import (
    BlobRecord,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    decode,
)

M = TypeVar("M", bound=Message)

Position = tuple[bytes, ...]


class Level(enum.IntEnum):
    PATIENT = 1
    STUDY = 2
    SERIES = 3
    INSTANCE = 4


@dataclass(frozen=True)
class Query:
    level: Level
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    study_instance_uid: str = ""
    accession_number: str = ""
    modality: str = ""
    study_date_from: str = ""
    study_date_to: str = ""
    series_instance_uid: str = ""
    # The issuer as given, the empty one included (a share binds its patient's issuer). Otherwise an
    # empty issuer_of_patient_id means every issuer, as DICOM's universal matching has it.
    issuer_exact: bool = False

    def fingerprint(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=8).hexdigest()

    @property
    def has_study_keys(self) -> bool:
        return bool(self.study_instance_uid or self.accession_number or self.modality
                    or self.study_date_from or self.study_date_to)


@dataclass
class Match:
    patient: PatientRecord
    study: StudyRecord | None = None
    series: SeriesRecord | None = None
    instance: InstanceRecord | None = None
    blob: BlobRecord | None = None


def validate(query: Query) -> None:
    """Rejects filters that cannot be right, naming the field."""
    for field in ("study_instance_uid", "series_instance_uid"):
        value = getattr(query, field)
        if value:
            uid.check(value, f"filter.{field}")
    for field in ("patient_id", "issuer_of_patient_id", "accession_number", "modality"):
        value = getattr(query, field)
        if len(value) > 64 or has_control_characters(value):
            raise InvalidInput(f"filter.{field} must be at most 64 characters without control characters")
    if len(query.patient_name) > 324:
        raise InvalidInput("filter.patient_name must be at most 324 characters")
    for field in ("study_date_from", "study_date_to"):
        value = getattr(query, field)
        if value and not _valid_date(value):
            raise InvalidInput(f"filter.study_date: {shown(value)} is not a date in YYYYMMDD form")
    if query.study_date_from and query.study_date_to and query.study_date_from > query.study_date_to:
        raise InvalidInput(
            f"filter.study_date: start {query.study_date_from} is after end {query.study_date_to}"
        )
    if query.level == Level.PATIENT and (query.has_study_keys or query.series_instance_uid):
        raise InvalidInput("a patient-level query takes only patient keys; use the study level")
    if query.level == Level.STUDY and query.series_instance_uid:
        raise InvalidInput("filter.series_instance_uid is a series key; use the series or instance level")


def _valid_date(value: str) -> bool:
    if not is_dicom_date(value):
        return False
    try:
        datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


def encode_token(query: Query, position: Position) -> str:
    body = {"q": query.fingerprint(), "p": [part.hex() for part in position]}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


def decode_token(query: Query, token: str) -> Position | None:
    if not token:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        position = tuple(bytes.fromhex(part) for part in body["p"])
        fingerprint = body["q"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("page_token is not a token this appliance issued") from exc
    if fingerprint != query.fingerprint():
        raise InvalidInput("page_token belongs to a different query (level and filter must not change)")
    return position


def find(env: IndexEnvironment, query: Query, page_size: int, page_token: str) -> tuple[list[Match], str]:
    """One page of matches and the token of the next page ('' when none is left)."""
    validate(query)
    after = decode_token(query, page_token)
    with env.read() as txn:
        scan = _Scan(env, txn, query)
        matches: list[tuple[Position, Match]] = []
        for item in scan.level_items(after):
            if len(matches) == page_size:
                return [m for _, m in matches], encode_token(query, matches[-1][0])
            matches.append(item)
    return [m for _, m in matches], ""


class _Scan:
    def __init__(self, env: IndexEnvironment, txn: lmdb.Transaction, query: Query) -> None:
        self.env, self.db, self.txn, self.q = env, env.dbs, txn, query
        self.tags = env.tags
        self.name_pattern = NamePattern(query.patient_name) if query.patient_name else None
        self.issuer_bound = bool(query.issuer_of_patient_id) or query.issuer_exact

    def opened(self, cls: type[M], db: str, key: bytes, value: bytes) -> M:
        return self.env.sealer.decode(cls, value, db, key)

    def level_items(self, after: Position | None) -> Iterator[tuple[Position, Match]]:
        if self.q.level == Level.PATIENT:
            yield from self.patients(after, inclusive=False)
        elif self.q.level == Level.STUDY:
            yield from self.studies(after, inclusive=False)
        elif self.q.level == Level.SERIES:
            yield from self.series(after, inclusive=False)
        else:
            yield from self.instances(after, inclusive=False)

    # -- walking one named database ---------------------------------------

    def range(self, db: str, prefix: bytes, after: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, from ``after`` on."""
        cursor = self.txn.cursor(db=self.db[db])
        start = after if after is not None and after >= prefix else prefix
        if not cursor.set_range(start):
            return
        for key, value in cursor.iternext():
            if not key.startswith(prefix):
                return
            if after is not None and key == after and not inclusive:
                continue
            yield key, value

    def nested(
        self, outer: Callable[[Position | None, bool], Iterator[tuple[Position, Match]]],
        width: int, after: Position | None, inclusive: bool,
        inner: Callable[[Match, bytes | None, bool], Iterator[tuple[bytes, Match]]],
    ) -> Iterator[tuple[Position, Match]]:
        """Items under each outer item; ``width`` is the length of outer positions."""
        outer_after = after[:width] if after else None
        for position, match in outer(outer_after, True):
            inner_after = after[width] if after and position == outer_after and len(after) > width else None
            for key, item in inner(match, inner_after, inclusive):
                yield position + (key,), item

    # -- patients ---------------------------------------------------------

    def patients(self, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        """Matching patients, from the most selective index; positions are that index's keys."""
        q, last = self.q, after[0] if after else None
        if q.patient_id:
            prefix = self.tags.patient_key(q.patient_id, q.issuer_of_patient_id) if self.issuer_bound \
                else self.tags.patient_id(q.patient_id)
            entries = self.every_patient(prefix, last, inclusive)
        elif self.name_pattern is not None:
            entries = self.patients_by_name(last, inclusive)
        else:
            entries = self.every_patient(b"", last, inclusive)
        for position, pkey, value in entries:
            patient = self.opened(PatientRecord, "patients", pkey, value)
            if self.patient_matches(patient):
                yield (position,), Match(patient)

    def every_patient(self, prefix: bytes, after: bytes | None,
                      inclusive: bool) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(position, patient key, stored value) of the patients whose key starts with ``prefix``."""
        for key, value in self.range("patients", prefix, after, inclusive):
            yield key, key, value

    def patients_by_name(self, after: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(position, patient key, stored value) of the candidates for the name pattern."""
        pattern = self.q.patient_name
        if not has_wildcards(pattern):
            prefix = self.tags.patient_name(pattern)
        else:
            start = _literal_prefix(pattern)
            if len(start) < keys.NAME_PREFIX_CHARS:
                # Too short a start to pick a bucket: every patient, each name checked.
                yield from self.every_patient(b"", after, inclusive)
                return
            prefix = self.tags.patient_name_prefix(start)
        for key, _ in self.range("by_patient_name", prefix, after, inclusive):
            pkey = key[keys.TAG_BYTES :]
            value = self.txn.get(pkey, db=self.db["patients"])
            if value is not None:
                yield key, pkey, value

    def patient_matches(self, patient: PatientRecord) -> bool:
        q = self.q
        if q.patient_id and patient.patient_id != q.patient_id:
            return False
        if self.issuer_bound and patient.issuer_of_patient_id != q.issuer_of_patient_id:
            return False
        return self.name_pattern is None or self.name_pattern.matches(patient.patient_name)

    # -- studies ----------------------------------------------------------

    def studies(self, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        q = self.q
        if q.study_instance_uid:
            candidates = self.one("studies", q.study_instance_uid.encode(), after, inclusive)
        elif q.accession_number:
            candidates = self.by_secondary("by_accession", self.tags.accession(q.accession_number), after, inclusive)
        elif q.patient_id or self.name_pattern is not None:
            candidates = self.nested(self.patients, 1, after, inclusive, self.studies_of_patient)
        elif q.study_date_from or q.study_date_to:
            candidates = self.by_date(after, inclusive)
        elif q.modality:
            candidates = self.by_secondary("by_modality", keys.join(q.modality, b""), after, inclusive)
        else:
            candidates = self.all_studies(after, inclusive)
        for position, match in candidates:
            if self.study_matches(match):
                yield position, match

    def one(self, db: str, key: bytes, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        if after and (after[0] > key or (after[0] == key and not inclusive)):
            return
        value = self.txn.get(key, db=self.db[db])
        if value is not None:
            yield (key,), self.study_match(self.opened(StudyRecord, db, key, value))

    def by_secondary(self, db: str, prefix: bytes, after: Position | None,
                     inclusive: bool) -> Iterator[tuple[Position, Match]]:
        """Studies under ``prefix`` of an index whose keys are prefix + StudyInstanceUID."""
        for key, _ in self.range(db, prefix, after[0] if after else None, inclusive):
            match = self.study_by_uid(key[len(prefix) :].decode())
            if match is not None:
                yield (key,), match

    def by_date(self, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        # A month bucket holds every study of that month; study_matches checks the days.
        low, high = self.q.study_date_from[:6], (self.q.study_date_to or "999999")[:6]
        buckets = [self.tags.study_month(m) for m in study_months(self.txn, self.env) if low <= m <= high]
        last = after[0] if after else None
        if last is not None:
            resumed = [i for i, bucket in enumerate(buckets) if last.startswith(bucket)]
            buckets = buckets[resumed[0] :] if resumed else []
        for bucket in buckets:
            start = last if last is not None and last.startswith(bucket) else None
            for key, _ in self.range("by_study_date", bucket, start, inclusive):
                match = self.study_by_uid(keys.after_tag(key))
                if match is not None:
                    yield (key,), match

    def all_studies(self, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        for key, value in self.range("studies", b"", after[0] if after else None, inclusive):
            yield (key,), self.study_match(self.opened(StudyRecord, "studies", key, value))

    def studies_of_patient(self, patient: Match, after: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, Match]]:
        pkey = self.tags.patient_key(patient.patient.patient_id, patient.patient.issuer_of_patient_id)
        for key, _ in self.range("patient_studies", pkey, after, inclusive):
            uid_ = key[keys.PATIENT_KEY_BYTES :]
            value = self.txn.get(uid_, db=self.db["studies"])
            if value is not None:
                yield key, Match(patient.patient, self.opened(StudyRecord, "studies", uid_, value))

    def study_by_uid(self, study_uid: str) -> Match | None:
        key = study_uid.encode()
        value = self.txn.get(key, db=self.db["studies"])
        return None if value is None else self.study_match(self.opened(StudyRecord, "studies", key, value))

    def study_match(self, study: StudyRecord) -> Match:
        value = self.txn.get(study.patient_key, db=self.db["patients"])
        patient = PatientRecord() if value is None else \
            self.opened(PatientRecord, "patients", study.patient_key, value)
        return Match(patient, study)

    def study_matches(self, match: Match) -> bool:
        q, study = self.q, match.study
        assert study is not None
        if not self.patient_matches(match.patient):
            return False
        if q.study_instance_uid and study.study_instance_uid != q.study_instance_uid:
            return False
        if q.accession_number and study.accession_number != q.accession_number:
            return False
        if q.modality and q.modality not in study.modalities and self.q.level == Level.STUDY:
            return False
        if q.study_date_from and not (is_dicom_date(study.study_date) and study.study_date >= q.study_date_from):
            return False
        return not (q.study_date_to and not (is_dicom_date(study.study_date) and study.study_date <= q.study_date_to))

    # -- series and instances ---------------------------------------------

    def series(self, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        if self.q.series_instance_uid:
            key = self.q.series_instance_uid.encode()
            value = self.txn.get(key, db=self.db["series"])
            if value is None:
                return
            series = self.opened(SeriesRecord, "series", key, value)
            study = self.study_by_uid(series.study_instance_uid)
            key = series.series_instance_uid.encode()
            if study is None or not self.study_matches(study) or not self.series_matches(series):
                return
            if after and (after[0] > key or (after[0] == key and not inclusive)):
                return
            yield (key,), Match(study.patient, study.study, series)
            return
        width = self.study_position_width()
        yield from self.nested(self.studies, width, after, inclusive, self.series_of_study)

    def study_position_width(self) -> int:
        q = self.q
        if not q.study_instance_uid and not q.accession_number and (q.patient_id or self.name_pattern is not None):
            return 2
        return 1

    def series_of_study(self, study: Match, after: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, Match]]:
        assert study.study is not None
        uid_ = study.study.study_instance_uid
        for key, _ in self.range("study_series", keys.join(uid_, b""), after, inclusive):
            series_key = keys.last_part(key).encode()
            value = self.txn.get(series_key, db=self.db["series"])
            if value is None:
                continue
            series = self.opened(SeriesRecord, "series", series_key, value)
            if self.series_matches(series):
                yield key, Match(study.patient, study.study, series)

    def series_matches(self, series: SeriesRecord) -> bool:
        return not self.q.modality or series.modality == self.q.modality

    def instances(self, after: Position | None, inclusive: bool) -> Iterator[tuple[Position, Match]]:
        width = 1 if self.q.series_instance_uid else self.study_position_width() + 1
        yield from self.nested(self.series, width, after, inclusive, self.instances_of_series)

    def instances_of_series(self, series: Match, after: bytes | None, inclusive: bool) -> Iterator[tuple[bytes, Match]]:
        assert series.series is not None
        uid_ = series.series.series_instance_uid
        for key, _ in self.range("series_instances", keys.join(uid_, b""), after, inclusive):
            value = self.txn.get(keys.last_part(key).encode(), db=self.db["instances"])
            if value is not None:
                instance = decode(InstanceRecord, value)
                blob = self.txn.get(keys.blob_key(DigestFunction.BLAKE3, instance.digest), db=self.db["blobs"])
                yield key, Match(series.patient, series.study, series.series, instance,
                                 decode(BlobRecord, blob) if blob is not None else None)


def _literal_prefix(pattern: str) -> str:
    """The part before the first wildcard: where a name-index scan can start."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return keys.normalise_name(pattern[:cut])
