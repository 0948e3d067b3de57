"""The LMDB index driven directly: hierarchy, duplicates, conflicts, find and paging."""

from __future__ import annotations

import dataclasses
import fnmatch
import threading
from pathlib import Path

import pytest

from pacsvault.daemon.dicom.parse import ParsedInstance
from pacsvault.daemon.digest import compute
from pacsvault.daemon.errors import Conflict, DataLoss, IndexFull, InvalidInput
from pacsvault.daemon.index import query as q
from pacsvault.daemon.index.catalog import AddOutcome, Catalog, NewBlob
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobLocation, InstanceRecord, decode, encode

NAMES = ["Doe^Jane", "Doe^John", "Müller^Jürgen", "山田^太郎", "Smith^Anna", "DOEBLE^X"]
DATES = ["20200101", "20200615", "20211231", "20220301", ""]
MODALITIES = ["CT", "MR", "US", "CR"]


def instance(patient: int, study: int, series: int, number: int, **over: object) -> ParsedInstance:
    base = ParsedInstance(
        sop_instance_uid=f"1.2.3.{patient}.{study}.{series}.{number}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_instance_uid=f"1.2.3.{patient}.{study}.{series}",
        study_instance_uid=f"1.2.3.{patient}.{study}",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_id=f"P{patient % 7}", issuer_of_patient_id="HOSP" if patient >= 7 else "",
        patient_name=NAMES[patient % len(NAMES)], patient_birth_date="", patient_sex="",
        study_date=DATES[(patient + study) % len(DATES)], study_time="",
        accession_number=f"ACC{patient}{study}", study_description="", study_id="",
        referring_physician_name="", modality=MODALITIES[(study + series) % len(MODALITIES)],
        series_number=str(series), series_description="", instance_number=str(number), number_of_frames=1,
    )
    return dataclasses.replace(base, **over)


def blob_for(parsed: ParsedInstance, content: bytes | None = None) -> NewBlob:
    digest = compute(content if content is not None else parsed.sop_instance_uid.encode())
    return NewBlob(digest, BlobLocation(tier="hot", volume_id="v1"), digest.size_bytes)


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    environment = IndexEnvironment(tmp_path / "index", map_size=64 * 1024 * 1024)
    yield environment
    environment.close()


@pytest.fixture
def populated(env: IndexEnvironment) -> list[ParsedInstance]:
    catalog = Catalog(env)
    made = []
    for patient in range(12):
        for study in range(1 + patient % 3):
            for series in range(2):
                for number in range(2):
                    p = instance(patient, study, series, number)
                    assert catalog.add_instance(p, blob_for(p), 1.0) is AddOutcome.STORED
                    made.append(p)
    return made


def test_duplicate_conflict_and_hierarchy(env: IndexEnvironment) -> None:
    catalog = Catalog(env)
    p = instance(1, 1, 1, 1)
    assert catalog.add_instance(p, blob_for(p), 1.0) is AddOutcome.STORED
    assert catalog.add_instance(p, blob_for(p), 2.0) is AddOutcome.DUPLICATE
    with pytest.raises(Conflict, match="stored version is kept"):
        catalog.add_instance(p, blob_for(p, b"other bytes"), 3.0)
    with pytest.raises(InvalidInput, match="stored for PatientID"):
        other = instance(1, 1, 1, 2, patient_id="SOMEONE-ELSE")
        catalog.add_instance(other, blob_for(other), 4.0)
    with pytest.raises(InvalidInput, match="belongs to study"):
        moved = instance(1, 1, 1, 3, study_instance_uid="1.2.3.99")
        catalog.add_instance(moved, blob_for(moved), 5.0)
    stats = env.stats()
    assert (stats["patients"], stats["studies"], stats["series"], stats["instances"]) == (1, 1, 1, 1)
    stored, blob = catalog.instance(p.sop_instance_uid)
    assert blob.refcount == 1
    assert stored.stored_at == 1.0


def test_identical_bytes_are_one_refcounted_blob(env: IndexEnvironment) -> None:
    catalog = Catalog(env)
    a, b = instance(1, 1, 1, 1), instance(1, 1, 1, 2)
    catalog.add_instance(a, blob_for(a, b"same"), 1.0)
    catalog.add_instance(b, blob_for(b, b"same"), 1.0)
    assert env.stats()["blobs"] == 1
    assert catalog.blob(compute(b"same")).refcount == 2


def test_concurrent_stores_share_commits_and_stay_consistent(env: IndexEnvironment) -> None:
    catalog = Catalog(env)
    items = [instance(p, 0, 0, n) for p in range(8) for n in range(25)]
    outcomes: list[AddOutcome] = []

    def worker(chunk: list[ParsedInstance]) -> None:
        for p in chunk:
            outcomes.append(catalog.add_instance(p, blob_for(p), 1.0))
            outcomes.append(catalog.add_instance(p, blob_for(p), 1.0))  # the same again

    threads = [threading.Thread(target=worker, args=(items[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(AddOutcome.STORED) == len(items)
    assert outcomes.count(AddOutcome.DUPLICATE) == len(items)
    assert env.stats()["instances"] == len(items)


def brute_force(made: list[ParsedInstance], query: q.Query) -> set[str]:
    """What a query must return, computed without any index."""
    out = set()
    for p in made:
        if query.patient_id and p.patient_id != query.patient_id:
            continue
        if query.issuer_of_patient_id and p.issuer_of_patient_id != query.issuer_of_patient_id:
            continue
        if query.patient_name and not fnmatch.fnmatchcase(p.patient_name.casefold(), query.patient_name.casefold()):
            continue
        if query.accession_number and p.accession_number != query.accession_number:
            continue
        if query.study_date_from and not (p.study_date and p.study_date >= query.study_date_from):
            continue
        if query.study_date_to and not (p.study_date and p.study_date <= query.study_date_to):
            continue
        if query.modality and query.level == q.Level.STUDY:
            if not any(o.modality == query.modality for o in made if o.study_instance_uid == p.study_instance_uid):
                continue
        elif query.modality and p.modality != query.modality:
            continue
        key = {
            q.Level.PATIENT: f"{p.patient_id}|{p.issuer_of_patient_id}",
            q.Level.STUDY: p.study_instance_uid,
            q.Level.SERIES: p.series_instance_uid,
            q.Level.INSTANCE: p.sop_instance_uid,
        }[query.level]
        out.add(key)
    return out


def result_key(match: q.Match, level: q.Level) -> str:
    if level == q.Level.PATIENT:
        return f"{match.patient.patient_id}|{match.patient.issuer_of_patient_id}"
    if level == q.Level.STUDY:
        return match.study.study_instance_uid
    if level == q.Level.SERIES:
        return match.series.series_instance_uid
    return match.instance.sop_instance_uid


QUERIES = [
    {},
    {"patient_id": "P3"},
    {"patient_id": "P1", "issuer_of_patient_id": "HOSP"},
    {"patient_name": "doe*"},
    {"patient_name": "*^j*"},
    {"patient_name": "m?ller^*"},
    {"patient_name": "山田*"},
    {"accession_number": "ACC41"},
    {"study_date_from": "20200101", "study_date_to": "20201231"},
    {"study_date_from": "20211231"},
    {"study_date_to": "20200101"},
    {"modality": "CT"},
    {"modality": "MR", "patient_id": "P2"},
    {"patient_name": "*", "study_date_from": "20200601"},
]


@pytest.mark.parametrize("level", [q.Level.STUDY, q.Level.SERIES, q.Level.INSTANCE, q.Level.PATIENT])
@pytest.mark.parametrize("filters", QUERIES, ids=[str(f) for f in QUERIES])
def test_find_pages_through_exactly_the_matches(env: IndexEnvironment, populated: list[ParsedInstance],
                                                level: q.Level, filters: dict) -> None:
    query = q.Query(level, **filters)
    if level == q.Level.PATIENT and query.has_study_keys:
        with pytest.raises(InvalidInput, match="patient-level"):
            q.find(env, query, 10, "")
        return
    expected = brute_force(populated, query)
    for page_size in (1, 3, 1000):
        seen: list[str] = []
        token = ""
        while True:
            matches, token = q.find(env, query, page_size, token)
            assert len(matches) <= page_size
            seen.extend(result_key(m, level) for m in matches)
            if not token:
                break
        assert len(seen) == len(set(seen)), "a match appeared twice across pages"
        assert set(seen) == expected
    if not filters:
        assert expected, "the unfiltered query must match something"


def test_series_and_instance_of_one_series(env: IndexEnvironment, populated: list[ParsedInstance]) -> None:
    series_uid = populated[0].series_instance_uid
    matches, _ = q.find(env, q.Query(q.Level.INSTANCE, series_instance_uid=series_uid), 100, "")
    assert {m.instance.series_instance_uid for m in matches} == {series_uid}
    assert len(matches) == 2
    matches, _ = q.find(env, q.Query(q.Level.SERIES, series_instance_uid=series_uid), 100, "")
    assert [m.series.series_instance_uid for m in matches] == [series_uid]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (q.Query(q.Level.STUDY, study_date_from="20220101", study_date_to="20210101"), "is after end"),
        (q.Query(q.Level.STUDY, study_date_from="2022-01-01"), "YYYYMMDD"),
        (q.Query(q.Level.STUDY, study_date_from="20220230"), "YYYYMMDD"),
        (q.Query(q.Level.STUDY, study_instance_uid="1.2.x"), "filter.study_instance_uid"),
        (q.Query(q.Level.STUDY, series_instance_uid="1.2.3"), "series key"),
        (q.Query(q.Level.PATIENT, modality="CT"), "patient-level"),
        (q.Query(q.Level.STUDY, patient_id="x" * 65), "filter.patient_id"),
    ],
)
def test_invalid_queries_are_named(env: IndexEnvironment, query: q.Query, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        q.find(env, query, 10, "")


def test_page_token_is_bound_to_its_query(env: IndexEnvironment, populated: list[ParsedInstance]) -> None:
    _, token = q.find(env, q.Query(q.Level.STUDY), 2, "")
    assert token
    with pytest.raises(InvalidInput, match="different query"):
        q.find(env, q.Query(q.Level.STUDY, modality="CT"), 2, token)
    with pytest.raises(InvalidInput, match="not a token"):
        q.find(env, q.Query(q.Level.STUDY), 2, "garbage!")


def test_full_map_is_index_full_and_nothing_half_written(tmp_path: Path) -> None:
    env = IndexEnvironment(tmp_path / "tiny", map_size=1024 * 1024)
    catalog = Catalog(env)
    stored = 0
    try:
        with pytest.raises(IndexFull, match="index.map_size_bytes"):
            for n in range(100_000):
                p = instance(n, 0, 0, 0, study_description="x" * 200)
                catalog.add_instance(p, blob_for(p), 1.0)
                stored += 1
        stats = env.stats()
        assert stats["instances"] == stored == stats["studies"] == stats["series"]
        for n in range(stored):  # everything acknowledged is complete
            catalog.instance(instance(n, 0, 0, 0).sop_instance_uid)
    finally:
        env.close()


def test_records_carry_a_schema_version() -> None:
    record = InstanceRecord(sop_instance_uid="1.2")
    value = encode(record)
    assert value[0] == 1
    assert decode(InstanceRecord, value) == record
    with pytest.raises(DataLoss, match="schema version 7"):
        decode(InstanceRecord, b"\x07" + value[1:])


def test_the_query_table_is_not_vacuous(env: IndexEnvironment, populated: list[ParsedInstance]) -> None:
    """Most queries above must match something, or the paging test proves little."""
    empty = [f for f in QUERIES if not brute_force(populated, q.Query(q.Level.INSTANCE, **f))]
    assert len(empty) <= 1, empty
