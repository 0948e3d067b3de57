"""The LMDB index driven directly: hierarchy, duplicates, conflicts, find and paging,
each with encryption on (real keys) and off; and, with it on, no PHI in the index's bytes."""

from __future__ import annotations

import dataclasses
import fnmatch
import threading
from pathlib import Path

import pytest

from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.crypto.keyring import Keyring, KeyringHolder
from pacsvault.daemon.dicom.parse import ParsedInstance
from pacsvault.daemon.digest import compute
from pacsvault.daemon.errors import ConfigError, Conflict, DataLoss, IndexFull, InvalidInput, NotFound
from pacsvault.daemon.index import keys, placement
from pacsvault.daemon.index import query as q
from pacsvault.daemon.index.catalog import AddOutcome, Catalog, NewBlob
from pacsvault.daemon.index.lmdb_env import LAYOUT, IndexEnvironment
from pacsvault.daemon.index.records import (
    BlobLocation,
    InstanceRecord,
    OutboxEntry,
    PatientRecord,
    StudyRecord,
    decode,
    encode,
)
from pacsvault.daemon.security.credentials import CredentialStore, token_hash

# Short, ß (casefolds to ss), non-Latin and prefix-sharing names: every path of name lookup.
NAMES = ["Doe^Jane", "Doe^John", "Müller^Jürgen", "山田^太郎", "Smith^Anna", "DOEBLE^X", "Li", "Weiß^Anna"]
# Two days of one month, and an 8-digit date that is no calendar date, which must sort as before.
DATES = ["20200101", "20200615", "20211231", "20220301", "", "20200620", "20201399"]
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


def real_keys() -> ApplianceKeys:
    return ApplianceKeys.from_holder(KeyringHolder(Keyring.generate("test keyring"), None))


@pytest.fixture(params=["encryption on", "encryption off"])
def env(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    appliance_keys = real_keys() if request.param == "encryption on" else None
    environment = IndexEnvironment(tmp_path / "index", map_size=64 * 1024 * 1024, keys=appliance_keys)
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
    {"patient_name": "DOE^JANE"},
    {"patient_name": "weiss^anna"},
    {"patient_name": "weis*"},
    {"patient_name": "smi?h^*"},
    {"patient_name": "li"},
    {"patient_name": "l?"},
    {"patient_name": "*^j*"},
    {"patient_name": "m?ller^*"},
    {"patient_name": "müller*"},
    {"patient_name": "山田*"},
    {"patient_name": "doe*", "patient_id": "P1"},
    {"accession_number": "ACC41"},
    {"accession_number": "ACC41", "patient_name": "nobody"},
    {"study_date_from": "20200101", "study_date_to": "20201231"},
    {"study_date_from": "20200615", "study_date_to": "20200615"},
    {"study_date_from": "20200602", "study_date_to": "20211231"},
    {"study_date_from": "20211231"},
    {"study_date_to": "20200101"},
    {"study_date_to": "20200619"},
    {"study_date_from": "20200101", "patient_name": "doe*"},
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
    assert empty == [{"accession_number": "ACC41", "patient_name": "nobody"}], empty


# -- encryption at rest: PHI stays out of the index's bytes ---------------------

# Unique markers in every PHI field the index keeps (and the month of the study date).
CANARY = {
    "patient_name": "Zqcanaryname^Xylophone",
    "patient_id": "ZQPID-CANARY-7731",
    "issuer_of_patient_id": "ZQ-ISSUER-CANARY",
    "patient_birth_date": "19230417",
    "accession_number": "ZQACC-CANARY-0099",
    "study_description": "Zq canary study description",
    "study_id": "ZQSTUDYID77",
    "referring_physician_name": "Zqreferrer^Canary",
    "series_description": "Zq canary series description",
    "series_number": "7319",
    "study_date": "19870923",
}


def store_canary(env: IndexEnvironment) -> ParsedInstance:
    catalog = Catalog(env)
    for n in range(3):
        p = instance(900, 1, 1, n, **CANARY)
        catalog.add_instance(p, blob_for(p), 1.0)
    credentials = CredentialStore(env)
    share = credentials.create_share("", keys.share_scope(CANARY["patient_id"], CANARY["issuer_of_patient_id"]),
                                     60, 0, "", "tester")
    credentials.authenticate(share.token, None)  # rewrites the record (its use counted)
    return p


def leaked(index_dir: Path) -> dict[str, list[str]]:
    """Which markers (as stored, casefolded, or a study month) appear in the raw bytes of which files."""
    needles = {m for v in CANARY.values() for m in (v, v.casefold())} | {CANARY["study_date"][:6]}
    found: dict[str, list[str]] = {}
    for path in sorted(index_dir.rglob("*")):
        if path.is_file():
            raw = path.read_bytes()
            hits = sorted(n for n in needles if n.encode() in raw)
            if hits:
                found[path.name] = hits
    return found


def test_canary_no_phi_in_any_index_file_with_encryption_on(tmp_path: Path) -> None:
    env = IndexEnvironment(tmp_path / "index", map_size=64 * 1024 * 1024, keys=real_keys())
    try:
        p = store_canary(env)
        # Everything is still found, PHI and all, by every PHI lookup.
        for filters in ({"patient_id": p.patient_id}, {"patient_name": p.patient_name.upper()},
                        {"patient_name": "zqcan*^x*"}, {"accession_number": p.accession_number},
                        {"study_date_from": p.study_date, "study_date_to": p.study_date}):
            matches, _ = q.find(env, q.Query(q.Level.SERIES, **filters), 10, "")
            assert [(m.patient.patient_name, m.patient.patient_birth_date, m.study.study_description,
                     m.series.series_description) for m in matches] == [
                (p.patient_name, p.patient_birth_date, p.study_description, p.series_description)], filters
        [share] = CredentialStore(env).list("share")
        assert keys.split_share_scope(share.patient_key) == (p.patient_id, p.issuer_of_patient_id)
        assert env.stats()["instances"] == 3
        assert leaked(tmp_path / "index") == {}
    finally:
        env.close()
    assert leaked(tmp_path / "index") == {}


def test_the_canary_scan_sees_phi_when_encryption_is_off(tmp_path: Path) -> None:
    """The control: the same scan finds the markers in an index written in plain."""
    env = IndexEnvironment(tmp_path / "index", map_size=64 * 1024 * 1024)
    try:
        store_canary(env)
        assert set(leaked(tmp_path / "index")["data.mdb"]) >= {
            CANARY["patient_name"], CANARY["patient_id"], CANARY["accession_number"], CANARY["study_description"]}
    finally:
        env.close()


@pytest.fixture
def sealed_env(tmp_path: Path):  # type: ignore[no-untyped-def]
    environment = IndexEnvironment(tmp_path / "sealed", map_size=64 * 1024 * 1024, keys=real_keys())
    catalog = Catalog(environment)
    for patient in (1, 2):
        p = instance(patient, 0, 0, 0)
        catalog.add_instance(p, blob_for(p), 1.0)
    yield environment
    environment.close()


def raw_put(env: IndexEnvironment, db: str, key: bytes, value: bytes) -> None:
    """Someone with the disks (and not the key) changing a value."""
    with env.env.begin(write=True) as txn:
        txn.put(key, value, db=env.dbs[db])


def raw_get(env: IndexEnvironment, db: str, key: bytes) -> bytes:
    with env.read() as txn:
        value = txn.get(key, db=env.dbs[db])
    assert value is not None
    return value


def test_a_sealed_value_moved_to_another_key_fails(sealed_env: IndexEnvironment) -> None:
    env = sealed_env
    one, two = instance(1, 0, 0, 0), instance(2, 0, 0, 0)
    raw_put(env, "studies", two.study_instance_uid.encode(), raw_get(env, "studies", one.study_instance_uid.encode()))
    with pytest.raises(DataLoss, match="StudyRecord in studies fails authentication"):
        q.find(env, q.Query(q.Level.STUDY, study_instance_uid=two.study_instance_uid), 10, "")
    key_one = env.tags.patient_key(one.patient_id, one.issuer_of_patient_id)
    key_two = env.tags.patient_key(two.patient_id, two.issuer_of_patient_id)
    raw_put(env, "patients", key_two, raw_get(env, "patients", key_one))
    with pytest.raises(DataLoss, match="PatientRecord in patients fails authentication"):
        q.find(env, q.Query(q.Level.PATIENT, patient_id=two.patient_id), 10, "")


def test_a_changed_or_unsealed_value_fails(sealed_env: IndexEnvironment) -> None:
    env = sealed_env
    one = instance(1, 0, 0, 0)
    key = env.tags.patient_key(one.patient_id, one.issuer_of_patient_id)
    value = bytearray(raw_get(env, "patients", key))
    value[-3] ^= 0x01  # inside the sealed fields
    raw_put(env, "patients", key, bytes(value))
    with pytest.raises(DataLoss, match="fails authentication"):
        q.find(env, q.Query(q.Level.PATIENT, patient_id=one.patient_id), 10, "")
    # A plain record put in its place (schema 1, PHI inline) is refused, not believed.
    raw_put(env, "patients", key, encode(PatientRecord(patient_id=one.patient_id, patient_name="Forged^Name")))
    with pytest.raises(DataLoss, match="unsealed although encryption is on"):
        q.find(env, q.Query(q.Level.PATIENT, patient_id=one.patient_id), 10, "")


def test_a_share_credential_moved_to_another_token_fails(sealed_env: IndexEnvironment) -> None:
    credentials = CredentialStore(sealed_env)
    share = credentials.create_share("", keys.share_scope("P1", ""), 60, 0, "", "tester")
    other = credentials.create_share("1.2.3", b"", 60, 0, "", "tester")
    raw_put(sealed_env, "credentials", token_hash(other.token),
            raw_get(sealed_env, "credentials", token_hash(share.token)))
    with pytest.raises(DataLoss, match="CredentialRecord in credentials fails authentication"):
        credentials.authenticate(other.token, None)
    assert keys.split_share_scope(credentials.authenticate(share.token, None).patient_key) == ("P1", "")


def test_sealed_records_keep_counts_readable_and_phi_sealed(sealed_env: IndexEnvironment) -> None:
    env = sealed_env
    uid_ = instance(1, 0, 0, 0).study_instance_uid.encode()
    value = raw_get(env, "studies", uid_)
    assert value[0] == 2
    stored = decode(StudyRecord, value)  # what tiering reads: no key needed
    assert (stored.instance_count, dict(stored.tier_instances), stored.study_date) == (1, {"hot": 1}, "")
    opened = env.sealer.decode(StudyRecord, value, "studies", uid_)
    assert opened.study_date == instance(1, 0, 0, 0).study_date
    assert encode(opened) == value  # written back, an opened record keeps its seal and writes no PHI
    with env.read() as txn:  # the mover's age rule may count from the study date: opened
        coldest = next(placement.coldest_studies(txn, env, "hot"))
    assert coldest.study_date == instance(1, 0, 0, 0).study_date


def test_a_sealed_index_without_its_keyring_is_data_loss(sealed_env: IndexEnvironment, tmp_path: Path) -> None:
    sealed_env.close()
    for appliance_keys in (None, real_keys()):
        other = IndexEnvironment(tmp_path / "sealed", map_size=64 * 1024 * 1024, keys=appliance_keys)
        try:
            with pytest.raises(DataLoss):
                q.find(other, q.Query(q.Level.STUDY), 10, "")
        finally:
            other.close()


def test_an_index_with_phi_in_its_keys_is_refused(tmp_path: Path) -> None:
    env = IndexEnvironment(tmp_path / "old", map_size=64 * 1024 * 1024)
    p = instance(1, 0, 0, 0)
    Catalog(env).add_instance(p, blob_for(p), 1.0)
    with env.env.begin(write=True) as txn:
        txn.delete(LAYOUT, db=env.dbs["meta"])  # as an index written before tags had no layout mark
    env.close()
    with pytest.raises(ConfigError, match="key layout 1"):
        IndexEnvironment(tmp_path / "old", map_size=64 * 1024 * 1024)


# Where a deleted study could linger: every db but the books that keep history on purpose.
_CONTENT_DBS = [name for name in keys.DATABASES
                if name not in ("meta", "outbox", "doomed_blobs", "volumes", "credentials", "revoked_certificates",
                                "break_glass", "audit_checkpoints", "replica_records", "moves")]


def _keys_of(env: IndexEnvironment) -> dict[str, set[bytes]]:
    with env.read() as txn:
        return {name: {bytes(k) for k, _ in txn.cursor(db=env.dbs[name])} for name in _CONTENT_DBS}


@pytest.mark.parametrize("encrypted", [True, False], ids=["encryption on", "encryption off"])
def test_deleting_a_study_leaves_the_index_as_if_it_had_never_been_stored(tmp_path: Path, encrypted: bool) -> None:
    appliance_keys = real_keys() if encrypted else None
    made = [instance(p, s, se, n) for p in range(9) for s in range(1 + p % 3) for se in range(2) for n in range(2)]
    # Patient 4 has two studies (one goes), patient 0 one (the patient goes with it).
    doomed = {made_one.study_instance_uid for made_one in made if made_one.study_instance_uid in
              {"1.2.3.4.1", "1.2.3.0.0"}}
    envs = []
    for name, stored in (("deleted", made), ("never", [m for m in made if m.study_instance_uid not in doomed])):
        env = IndexEnvironment(tmp_path / name, map_size=64 * 1024 * 1024, keys=appliance_keys)
        envs.append(env)
        catalog = Catalog(env, replicate=True)
        for p in stored:
            catalog.add_instance(p, blob_for(p), 1.0)
    deleted_env, never_env = envs
    catalog = Catalog(deleted_env, replicate=True)
    results = [catalog.delete_study(uid, 2.0) for uid in sorted(doomed)]
    assert sum(len(r.sop_instance_uids) for r in results) == 4 + 4
    assert sum(r.blobs_released for r in results) == 8
    assert _keys_of(deleted_env) == _keys_of(never_env)
    with deleted_env.read() as txn:
        patient_4 = txn.get(deleted_env.tags.patient_key("P4", ""), db=deleted_env.dbs["patients"])
        assert decode(PatientRecord, patient_4).study_count == 1
    assert len(catalog.doomed_blobs()) == 8
    # The peer is told, in order, after the stores it was sent before.
    with deleted_env.read() as txn:
        entries = [decode(OutboxEntry, v) for _, v in txn.cursor(db=deleted_env.dbs["outbox"])]
    assert [e.delete for e in entries[-8:]] == [True] * 8 and all(e.release_blob for e in entries[-8:])
    with pytest.raises(NotFound, match="no study"):
        catalog.delete_study("1.2.3.4.1", 3.0)
    for env in envs:
        env.close()
