"""Taking one instance out of the live index and putting it back, keeping every count and
secondary entry right: what the trash (``index.trash``) is built on.

``detach`` removes an instance and, when they become empty, its series, study and patient,
with every index entry that names them; it leaves its blob's reference alone (the trash
holds it). ``attach`` puts an instance back, re-making whatever above it is missing from the
snapshots taken when it was detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmdb

from pacsvault.daemon.digest import DigestFunction
from pacsvault.daemon.errors import Conflict
from pacsvault.daemon.index import keys, placement
from pacsvault.daemon.index.catalog import is_dicom_date
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import (
    BlobRecord,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    TrashedInstance,
    decode,
    encode,
)


@dataclass
class Detached:
    """An instance out of the live index, with the records above it as they were."""

    instance: InstanceRecord
    patient_key: bytes
    patient_value: bytes
    study_value: bytes
    series_value: bytes


def detach(txn: lmdb.Transaction, env: IndexEnvironment, sop_uid: str) -> Detached | None:
    db = env.dbs
    value = txn.get(sop_uid.encode(), db=db["instances"])
    if value is None:
        return None
    instance = decode(InstanceRecord, value)
    study_key, series_key = instance.study_instance_uid.encode(), instance.series_instance_uid.encode()
    study_value, series_value = txn.get(study_key, db=db["studies"]), txn.get(series_key, db=db["series"])
    study, series = decode(StudyRecord, study_value), decode(SeriesRecord, series_value)
    pkey = study.patient_key
    patient_value = txn.get(pkey, db=db["patients"])
    detached = Detached(instance, pkey, bytes(patient_value or b""), bytes(study_value), bytes(series_value))
    txn.delete(sop_uid.encode(), db=db["instances"])
    txn.delete(keys.join(instance.series_instance_uid, sop_uid), db=db["series_instances"])
    blob = _blob_of(txn, env, instance)
    if blob is not None:
        placement.count_instance_on_tier(txn, env, study, blob.location.tier, -1)
    study.instance_count -= 1
    study.size_bytes = max(0, study.size_bytes - instance.size_bytes)
    series.instance_count -= 1
    if series.instance_count <= 0:
        _drop_series(txn, env, study, series)
    else:
        txn.put(series_key, encode(series), db=db["series"])
    if patient_value is not None:
        patient = decode(PatientRecord, patient_value)
        patient.instance_count = max(0, patient.instance_count - 1)
        txn.put(pkey, encode(patient), db=db["patients"])
    if study.instance_count <= 0:
        _drop_study(txn, env, study)
    else:
        txn.put(study_key, encode(study), db=db["studies"])
    return detached


def _drop_series(txn: lmdb.Transaction, env: IndexEnvironment, study: StudyRecord, series: SeriesRecord) -> None:
    db = env.dbs
    txn.delete(series.series_instance_uid.encode(), db=db["series"])
    txn.delete(keys.join(study.study_instance_uid, series.series_instance_uid), db=db["study_series"])
    study.series_count -= 1
    modality = series.modality
    if modality and modality in study.modalities and not _other_series_with(txn, env, study, modality):
        study.modalities.remove(modality)
        txn.delete(keys.join(modality, study.study_instance_uid), db=db["by_modality"])


def _other_series_with(txn: lmdb.Transaction, env: IndexEnvironment, study: StudyRecord, modality: str) -> bool:
    for key in _prefix(txn, env.dbs["study_series"], keys.join(study.study_instance_uid, b"")):
        value = txn.get(keys.last_part(key).encode(), db=env.dbs["series"])
        if value is not None and decode(SeriesRecord, value).modality == modality:
            return True
    return False


def _drop_study(txn: lmdb.Transaction, env: IndexEnvironment, study: StudyRecord) -> None:
    db, uid = env.dbs, study.study_instance_uid.encode()
    opened = env.sealer.open(study, "studies", uid)  # its accession number and date name its entries
    txn.delete(study.patient_key + uid, db=db["patient_studies"])
    if opened.accession_number:
        txn.delete(env.tags.accession(opened.accession_number) + uid, db=db["by_accession"])
    if is_dicom_date(opened.study_date):
        txn.delete(env.tags.study_month(keys.study_month(opened.study_date)) + uid, db=db["by_study_date"])
    for modality in study.modalities:
        txn.delete(keys.join(modality, study.study_instance_uid), db=db["by_modality"])
    for tier in study.tier_instances:
        txn.delete(keys.tier_lru_key(tier, study.last_access, study.study_instance_uid), db=db["tier_lru"])
    txn.delete(uid, db=db["studies"])
    value = txn.get(study.patient_key, db=db["patients"])
    if value is None:
        return
    patient = decode(PatientRecord, value)
    patient.study_count -= 1
    if patient.study_count > 0:
        txn.put(study.patient_key, encode(patient), db=db["patients"])
        return
    opened_patient = env.sealer.open(patient, "patients", study.patient_key)
    if opened_patient.patient_name:
        for name_key in keys.patient_name_keys(env.tags, opened_patient.patient_name, study.patient_key):
            txn.delete(name_key, db=db["by_patient_name"])
    txn.delete(study.patient_key, db=db["patients"])


def check_attachable(txn: lmdb.Transaction, env: IndexEnvironment, trashed: TrashedInstance) -> None:
    """Raises Conflict when the instance's study or series belongs elsewhere now (changes nothing)."""
    instance = trashed.instance
    study_uid, series_uid = instance.study_instance_uid, instance.series_instance_uid
    study = _get(txn, env.dbs["studies"], study_uid.encode(), StudyRecord)
    series = _get(txn, env.dbs["series"], series_uid.encode(), SeriesRecord)
    if study is not None and study.patient_key != trashed.patient_key:  # type: ignore[attr-defined]
        raise Conflict(f"study {study_uid} belongs to another patient now; instance {instance.sop_instance_uid} "
                       "cannot come back into it")
    if series is not None and series.study_instance_uid != study_uid:  # type: ignore[attr-defined]
        raise Conflict(f"series {series_uid} belongs to study {series.study_instance_uid} now")  # type: ignore[attr-defined]


def attach(txn: lmdb.Transaction, env: IndexEnvironment, trashed: TrashedInstance) -> None:
    """Puts a detached instance back (``check_attachable`` first)."""
    check_attachable(txn, env, trashed)
    db, instance, pkey = env.dbs, trashed.instance, trashed.patient_key
    study_uid, series_uid = instance.study_instance_uid, instance.series_instance_uid
    study = _get(txn, db["studies"], study_uid.encode(), StudyRecord)
    series = _get(txn, db["series"], series_uid.encode(), SeriesRecord)
    patient = _get(txn, db["patients"], pkey, PatientRecord) or _fresh_patient(txn, env, trashed)
    if study is None:
        study = _fresh_study(txn, env, trashed, patient)
    if series is None:
        series = _fresh_series(txn, env, trashed, study)
    blob = _blob_of(txn, env, instance)
    if blob is not None:
        placement.count_instance_on_tier(txn, env, study, blob.location.tier, +1)
    patient.instance_count += 1
    study.instance_count += 1
    study.size_bytes += instance.size_bytes
    series.instance_count += 1
    txn.put(pkey, encode(patient), db=db["patients"])
    txn.put(study_uid.encode(), encode(study), db=db["studies"])
    txn.put(series_uid.encode(), encode(series), db=db["series"])
    txn.put(instance.sop_instance_uid.encode(), encode(instance), db=db["instances"])
    txn.put(keys.join(series_uid, instance.sop_instance_uid), b"", db=db["series_instances"])


def _fresh_patient(txn: lmdb.Transaction, env: IndexEnvironment, trashed: TrashedInstance) -> PatientRecord:
    patient = decode(PatientRecord, trashed.patient_value)
    patient.study_count, patient.instance_count = 0, 0
    opened = env.sealer.open(decode(PatientRecord, trashed.patient_value), "patients", trashed.patient_key)
    if opened.patient_name:
        for name_key in keys.patient_name_keys(env.tags, opened.patient_name, trashed.patient_key):
            txn.put(name_key, b"", db=env.dbs["by_patient_name"])
    return patient


def _fresh_study(txn: lmdb.Transaction, env: IndexEnvironment, trashed: TrashedInstance,
                 patient: PatientRecord) -> StudyRecord:
    db = env.dbs
    study = decode(StudyRecord, trashed.study_value)
    uid = study.study_instance_uid.encode()
    study.series_count, study.instance_count, study.size_bytes = 0, 0, 0
    study.tier_instances.clear()
    del study.modalities[:]
    opened = env.sealer.open(decode(StudyRecord, trashed.study_value), "studies", uid)
    if opened.accession_number:
        txn.put(env.tags.accession(opened.accession_number) + uid, b"", db=db["by_accession"])
    if is_dicom_date(opened.study_date):
        txn.put(env.tags.study_month(keys.study_month(opened.study_date)) + uid, b"", db=db["by_study_date"])
    patient.study_count += 1
    txn.put(trashed.patient_key + uid, b"", db=db["patient_studies"])
    return study


def _fresh_series(txn: lmdb.Transaction, env: IndexEnvironment, trashed: TrashedInstance,
                  study: StudyRecord) -> SeriesRecord:
    series = decode(SeriesRecord, trashed.series_value)
    series.instance_count = 0
    study.series_count += 1
    txn.put(keys.join(study.study_instance_uid, series.series_instance_uid), b"", db=env.dbs["study_series"])
    if series.modality and series.modality not in study.modalities:
        study.modalities.append(series.modality)
        txn.put(keys.join(series.modality, study.study_instance_uid), b"", db=env.dbs["by_modality"])
    return series


def _blob_of(txn: lmdb.Transaction, env: IndexEnvironment, instance: InstanceRecord) -> BlobRecord | None:
    value = txn.get(keys.blob_key(DigestFunction.BLAKE3, instance.digest), db=env.dbs["blobs"])
    return None if value is None else decode(BlobRecord, value)


def _get(txn: lmdb.Transaction, db: object, key: bytes, cls: type) -> object | None:
    value = txn.get(key, db=db)
    return None if value is None else decode(cls, value)


def _prefix(txn: lmdb.Transaction, db: object, prefix: bytes):  # type: ignore[no-untyped-def]
    from pacsvault.daemon.index.lmdb_env import prefix_keys

    return prefix_keys(txn, db, prefix)
