"""The write and point-read operations of the index: what ingest and retrieve call."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.dicom.parse import ParsedInstance
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import Conflict, InvalidInput, NotFound
from pacsvault.daemon.index import keys, placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment, prefix_keys
from pacsvault.daemon.replication import outbox
from pacsvault.daemon.index.records import (
    BlobLocation,
    BlobRecord,
    InstanceRecord,
    OutboxEntry,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    decode,
    encode,
)


class AddOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class NewBlob:
    """Where ingest put the blob, for the index to record."""

    digest: Digest
    location: BlobLocation
    stored_bytes: int
    # Restored from the peer: the peer holds it already, nothing to send back.
    from_peer: bool = False


class Catalog:
    """Adds instances and looks them up; all writes go through the one writer."""

    def __init__(self, env: IndexEnvironment, replicate: bool = False) -> None:
        self.env = env
        self._db = env.dbs
        # Whether new instances go into the replication outbox (same transaction).
        self.replicate = replicate

    # -- writes ---------------------------------------------------------

    def add_instance(self, parsed: ParsedInstance, blob: NewBlob, now: float) -> AddOutcome:
        """Indexes one instance and takes a reference on its blob, in one transaction.

        Raises Conflict when the SOP Instance UID is stored with other bytes
        (the stored version is kept), InvalidInput when the instance
        contradicts the hierarchy already stored.
        """
        return self.env.write(lambda txn: self._add(txn, parsed, blob, now))

    def _add(self, txn: lmdb.Transaction, p: ParsedInstance, blob: NewBlob, now: float) -> AddOutcome:
        db = self._db
        existing = txn.get(p.sop_instance_uid.encode(), db=db["instances"])
        if existing is not None:
            return repeat_outcome(decode(InstanceRecord, existing), p.sop_instance_uid, blob.digest)
        pkey = keys.patient_key(p.patient_id, p.issuer_of_patient_id)
        study = self._get(txn, "studies", p.study_instance_uid.encode(), StudyRecord)
        series = self._get(txn, "series", p.series_instance_uid.encode(), SeriesRecord)
        # Check everything before writing anything: other stores share this transaction.
        _check_hierarchy(p, pkey, study, series)
        patient = self._get(txn, "patients", pkey, PatientRecord)
        bkey = keys.blob_key(blob.digest.function, blob.digest.hash)
        blob_record = self._get(txn, "blobs", bkey, BlobRecord)

        if blob_record is None:
            _add_counter(txn, db["meta"], STORED_BYTES, blob.digest.size_bytes)
            blob_record = BlobRecord(
                digest_function=blob.digest.function, digest=blob.digest.hash,
                size_bytes=blob.digest.size_bytes, stored_bytes=blob.stored_bytes,
                location=blob.location, created_at=now, study_instance_uid=p.study_instance_uid,
            )
            placement.count_blob_on_volume(txn, self.env, blob_record, +1)
        blob_record.refcount += 1
        blob_record.replicated |= blob.from_peer
        txn.put(bkey, encode(blob_record), db=db["blobs"])

        if patient is None:
            patient = _new_patient(p)
            if p.patient_name:
                txn.put(keys.join(keys.name_key(p.patient_name), pkey), b"", db=db["by_patient_name"])
        if study is None:
            study = _new_study(p, pkey, now)
            patient.study_count += 1
            txn.put(keys.join(pkey, p.study_instance_uid), b"", db=db["patient_studies"])
            self._index_study(txn, study)
        if series is None:
            series = _new_series(p)
            study.series_count += 1
            txn.put(keys.join(p.study_instance_uid, p.series_instance_uid), b"", db=db["study_series"])
            if p.modality and p.modality not in study.modalities:
                study.modalities.append(p.modality)
                txn.put(keys.join(p.modality, p.study_instance_uid), b"", db=db["by_modality"])
        placement.count_instance_on_tier(txn, self.env, study, blob_record.location.tier, +1)
        patient.instance_count += 1
        study.instance_count += 1
        study.size_bytes += blob.digest.size_bytes
        series.instance_count += 1

        txn.put(pkey, encode(patient), db=db["patients"])
        txn.put(p.study_instance_uid.encode(), encode(study), db=db["studies"])
        txn.put(p.series_instance_uid.encode(), encode(series), db=db["series"])
        txn.put(p.sop_instance_uid.encode(), encode(_new_instance(p, blob.digest, now)), db=db["instances"])
        txn.put(keys.join(p.series_instance_uid, p.sop_instance_uid), b"", db=db["series_instances"])
        if self.replicate and not blob.from_peer:
            outbox.append(txn, self.env, OutboxEntry(
                sop_instance_uid=p.sop_instance_uid, digest_function=blob.digest.function,
                digest=blob.digest.hash, size_bytes=blob.digest.size_bytes, enqueued_at=now))
        return AddOutcome.STORED

    def _index_study(self, txn: lmdb.Transaction, study: StudyRecord) -> None:
        uid = study.study_instance_uid
        if study.accession_number:
            txn.put(keys.join(study.accession_number, uid), b"", db=self._db["by_accession"])
        if is_dicom_date(study.study_date):
            txn.put(keys.join(study.study_date, uid), b"", db=self._db["by_study_date"])

    def _get(self, txn: lmdb.Transaction, db: str, key: bytes, cls: type) -> object | None:
        value = txn.get(key, db=self._db[db])
        return None if value is None else decode(cls, value)

    def relocate(self, digest: Digest, location: BlobLocation, stored_bytes: int) -> None:
        """Points the blob at a fresh copy (after a repair), in one transaction."""

        def op(txn: lmdb.Transaction) -> None:
            value = txn.get(keys.blob_key(digest.function, digest.hash), db=self._db["blobs"])
            if value is not None:
                placement.relocate(txn, self.env, decode(BlobRecord, value), location.tier,
                                   location.volume_id, stored_bytes)

        self.env.write(op)

    # -- point reads ----------------------------------------------------

    def instance(self, sop_uid: str) -> tuple[InstanceRecord, BlobRecord]:
        with self.env.read() as txn:
            return self._instance_in(txn, sop_uid)

    def _instance_in(self, txn: lmdb.Transaction, sop_uid: str) -> tuple[InstanceRecord, BlobRecord]:
        value = txn.get(sop_uid.encode(), db=self._db["instances"])
        if value is None:
            raise NotFound(f"no instance with SOP Instance UID {sop_uid}")
        instance = decode(InstanceRecord, value)
        blob = txn.get(keys.blob_key(DigestFunction.BLAKE3, instance.digest), db=self._db["blobs"])
        if blob is None:
            raise NotFound(f"instance {sop_uid} has no blob record")
        return instance, decode(BlobRecord, blob)

    def blob(self, digest: Digest) -> BlobRecord | None:
        with self.env.read() as txn:
            value = txn.get(keys.blob_key(digest.function, digest.hash), db=self._db["blobs"])
        return None if value is None else decode(BlobRecord, value)

    def series_instances(self, series_uid: str) -> list[tuple[InstanceRecord, BlobRecord]]:
        with self.env.read() as txn:
            if txn.get(series_uid.encode(), db=self._db["series"]) is None:
                raise NotFound(f"no series with Series Instance UID {series_uid}")
            return list(self._instances_of_series(txn, series_uid))

    def study_instances(self, study_uid: str) -> list[tuple[InstanceRecord, BlobRecord]]:
        """Every instance of a study, series by series, from one consistent snapshot."""
        with self.env.read() as txn:
            if txn.get(study_uid.encode(), db=self._db["studies"]) is None:
                raise NotFound(f"no study with Study Instance UID {study_uid}")
            found = []
            for series_key in prefix_keys(txn, self._db["study_series"], keys.join(study_uid, b"")):
                found.extend(self._instances_of_series(txn, keys.last_part(series_key)))
            return found

    def _instances_of_series(
        self, txn: lmdb.Transaction, series_uid: str
    ) -> Iterator[tuple[InstanceRecord, BlobRecord]]:
        for key in prefix_keys(txn, self._db["series_instances"], keys.join(series_uid, b"")):
            yield self._instance_in(txn, keys.last_part(key))


STORED_BYTES = b"stored_bytes"


def _add_counter(txn: lmdb.Transaction, db: object, key: bytes, delta: int) -> None:
    current = txn.get(key, db=db)
    value = int.from_bytes(current, "little") if current else 0
    txn.put(key, (value + delta).to_bytes(8, "little"), db=db)


def repeat_outcome(stored: InstanceRecord, sop_uid: str, digest: Digest) -> AddOutcome:
    """An instance sent again: DUPLICATE with identical bytes; Conflict (the stored one is kept) otherwise."""
    if stored.digest == digest.hash:
        return AddOutcome.DUPLICATE
    raise Conflict(
        f"SOP Instance UID {sop_uid} is already stored with different content "
        f"(stored blake3 {stored.digest.hex()}, received {digest.hex}); the stored version "
        "is kept. Send a corrected object under a new SOP Instance UID."
    )


def is_dicom_date(value: str) -> bool:
    return len(value) == 8 and value.isdigit()


def _check_hierarchy(
    p: ParsedInstance, pkey: bytes, study: StudyRecord | None, series: SeriesRecord | None
) -> None:
    if study is not None and study.patient_key != pkey:
        owner_id, owner_issuer = keys.split_patient_key(study.patient_key)
        raise InvalidInput(
            f"study {p.study_instance_uid} is stored for PatientID {owner_id!r} (issuer "
            f"{owner_issuer!r}) but this instance names PatientID {p.patient_id!r} (issuer "
            f"{p.issuer_of_patient_id!r}); reconcile the patient identity before storing"
        )
    if series is not None and series.study_instance_uid != p.study_instance_uid:
        raise InvalidInput(
            f"series {p.series_instance_uid} belongs to study {series.study_instance_uid}, "
            f"not to {p.study_instance_uid}"
        )


def _new_patient(p: ParsedInstance) -> PatientRecord:
    return PatientRecord(
        patient_id=p.patient_id, issuer_of_patient_id=p.issuer_of_patient_id,
        patient_name=p.patient_name, patient_birth_date=p.patient_birth_date,
        patient_sex=p.patient_sex,
    )


def _new_study(p: ParsedInstance, pkey: bytes, now: float) -> StudyRecord:
    return StudyRecord(
        first_stored_at=now, last_access=now,
        study_instance_uid=p.study_instance_uid, patient_key=pkey, study_date=p.study_date,
        study_time=p.study_time, accession_number=p.accession_number,
        study_description=p.study_description, study_id=p.study_id,
        referring_physician_name=p.referring_physician_name,
    )


def _new_series(p: ParsedInstance) -> SeriesRecord:
    return SeriesRecord(
        series_instance_uid=p.series_instance_uid, study_instance_uid=p.study_instance_uid,
        modality=p.modality, series_number=p.series_number,
        series_description=p.series_description,
    )


def _new_instance(p: ParsedInstance, digest: Digest, now: float) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=p.sop_instance_uid, series_instance_uid=p.series_instance_uid,
        study_instance_uid=p.study_instance_uid, sop_class_uid=p.sop_class_uid,
        instance_number=p.instance_number, transfer_syntax_uid=p.transfer_syntax_uid,
        digest=digest.hash, size_bytes=digest.size_bytes, number_of_frames=p.number_of_frames,
        stored_at=now,
    )
