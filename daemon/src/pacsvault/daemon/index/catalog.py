"""The write and point-read operations of the index: what ingest and retrieve call.

New patients, studies and series are sealed once, when made (with encryption
on); later stores of the same study only change counts and tiers, which stay
readable, so ingest opens nothing and seals nothing for them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import lmdb

from pacsvault.daemon.dicom.parse import ParsedInstance
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import BlobGone, Conflict, InvalidInput, NotFound, PacsvaultError
from pacsvault.daemon.index import keys, placement, rotation
from pacsvault.daemon.index.lmdb_env import IndexEnvironment, prefix_keys
from pacsvault.daemon.index import outbox
from pacsvault.daemon.index.records import (
    BlobLocation,
    BlobRecord,
    InstanceRecord,
    OutboxEntry,
    PatientRecord,
    SeriesRecord,
    StudyMonths,
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
    # Its name at the peer, when it came from there.
    replica: Digest | None = None
    # The key version its data key was wrapped under (0: not sealed); see index.rotation.
    sealed_under: int = 0
    # Ingest found this copy through the blob's record rather than writing it: should the
    # record be gone by the commit, the copy may be gone too (BlobGone).
    reused: bool = False


@dataclass
class DeletedStudy:
    study_instance_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)
    blobs_released: int = 0


class Catalog:
    """Adds instances and looks them up; all writes go through the one writer."""

    def __init__(self, env: IndexEnvironment, replicate: bool = False) -> None:
        self.env = env
        self._db = env.dbs
        # Whether new instances go into the replication outbox (same transaction).
        self.replicate = replicate

    # -- writes ---------------------------------------------------------

    def add_instance(self, parsed: ParsedInstance, blob: NewBlob, now: float,
                     durable_first: Sequence[Callable[[], None]] = ()) -> AddOutcome:
        """Indexes one instance and takes a reference on its blob, in one transaction.

        ``durable_first``: flushes that must return before the commit (the blob's
        volume, written without a flush of its own). Raises Conflict when the
        SOP Instance UID is stored with other bytes (the stored version is
        kept), InvalidInput when the instance contradicts the hierarchy
        already stored.
        """
        return self.env.write(lambda txn: self._add(txn, parsed, blob, now), durable_first)

    def add_instances(self, items: Sequence[tuple[ParsedInstance, NewBlob, float]]) -> list[AddOutcome | PacsvaultError]:
        """Indexes many instances in one transaction (the index rebuild, which reads them from blobs
        already durable); a refused one gives its error in its place and the others commit (``_add``
        raises before it changes anything)."""

        def op(txn: lmdb.Transaction) -> list[AddOutcome | PacsvaultError]:
            outcomes: list[AddOutcome | PacsvaultError] = []
            for parsed, blob, now in items:
                try:
                    outcomes.append(self._add(txn, parsed, blob, now))
                except PacsvaultError as exc:
                    outcomes.append(exc)
            return outcomes

        return self.env.write(op)

    def _add(self, txn: lmdb.Transaction, p: ParsedInstance, blob: NewBlob, now: float) -> AddOutcome:
        db = self._db
        existing = txn.get(p.sop_instance_uid.encode(), db=db["instances"])
        if existing is not None:
            return repeat_outcome(decode(InstanceRecord, existing), p.sop_instance_uid, blob.digest)
        tags, sealer = self.env.tags, self.env.sealer
        pkey = tags.patient_key(p.patient_id, p.issuer_of_patient_id)
        # As stored: counts and tiers readable, PHI still sealed (none of it is needed here).
        study = self._get(txn, "studies", p.study_instance_uid.encode(), StudyRecord)
        series = self._get(txn, "series", p.series_instance_uid.encode(), SeriesRecord)
        # Check everything before writing anything: other stores share this transaction.
        self._check_hierarchy(txn, p, pkey, study, series)
        patient = self._get(txn, "patients", pkey, PatientRecord)
        bkey = keys.blob_key(blob.digest.function, blob.digest.hash)
        blob_record = self._get(txn, "blobs", bkey, BlobRecord)
        if blob_record is None and blob.reused:
            raise BlobGone(f"blob {blob.digest.hex[:16]} went before its commit")

        if blob_record is None:
            _add_counter(txn, db["meta"], STORED_BYTES, blob.digest.size_bytes)
            blob_record = BlobRecord(
                digest_function=blob.digest.function, digest=blob.digest.hash,
                size_bytes=blob.digest.size_bytes, stored_bytes=blob.stored_bytes,
                location=blob.location, created_at=now, study_instance_uid=p.study_instance_uid,
            )
            placement.count_blob_on_volume(txn, self.env, blob_record, +1)
            rotation.note_sealed_under(txn, self.env, bkey, blob.sealed_under)
        blob_record.refcount += 1
        blob_record.replicated |= blob.from_peer
        if blob.replica is not None and not blob_record.replica_digest:
            blob_record.replica_digest, blob_record.replica_size = blob.replica.hash, blob.replica.size_bytes
        txn.put(bkey, encode(blob_record), db=db["blobs"])

        if patient is None:
            patient = sealer.seal(_new_patient(p), "patients", pkey)
            if p.patient_name:
                for name_key in keys.patient_name_keys(tags, p.patient_name, pkey):
                    txn.put(name_key, b"", db=db["by_patient_name"])
        if study is None:
            study = sealer.seal(_new_study(p, pkey, now), "studies", p.study_instance_uid.encode())
            patient.study_count += 1
            txn.put(pkey + p.study_instance_uid.encode(), b"", db=db["patient_studies"])
            self._index_study(txn, study)
        if series is None:
            series = sealer.seal(_new_series(p), "series", p.series_instance_uid.encode())
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
        """The secondary index entries of a new study (its PHI is still in memory)."""
        uid = study.study_instance_uid.encode()
        tags = self.env.tags
        if study.accession_number:
            txn.put(tags.accession(study.accession_number) + uid, b"", db=self._db["by_accession"])
        if is_dicom_date(study.study_date):
            month = keys.study_month(study.study_date)
            txn.put(tags.study_month(month) + uid, b"", db=self._db["by_study_date"])
            self._note_study_month(txn, month)

    def _note_study_month(self, txn: lmdb.Transaction, month: str) -> None:
        months = study_months(txn, self.env)
        if month not in months:
            fresh = StudyMonths(months=sorted([*months, month]))
            value = self.env.sealer.encode(fresh, "meta", keys.STUDY_MONTHS)
            txn.put(keys.STUDY_MONTHS, value, db=self._db["meta"])

    def _get(self, txn: lmdb.Transaction, db: str, key: bytes, cls: type) -> object | None:
        value = txn.get(key, db=self._db[db])
        return None if value is None else decode(cls, value)

    def _check_hierarchy(
        self, txn: lmdb.Transaction, p: ParsedInstance, pkey: bytes, study: StudyRecord | None,
        series: SeriesRecord | None,
    ) -> None:
        if study is not None and study.patient_key != pkey:
            owner = self._patient_at(txn, study.patient_key)
            raise InvalidInput(
                f"study {p.study_instance_uid} is stored for PatientID {owner.patient_id!r} (issuer "
                f"{owner.issuer_of_patient_id!r}) but this instance names PatientID {p.patient_id!r} (issuer "
                f"{p.issuer_of_patient_id!r}); reconcile the patient identity before storing"
            )
        if series is not None and series.study_instance_uid != p.study_instance_uid:
            raise InvalidInput(
                f"series {p.series_instance_uid} belongs to study {series.study_instance_uid}, "
                f"not to {p.study_instance_uid}"
            )

    def _patient_at(self, txn: lmdb.Transaction, pkey: bytes) -> PatientRecord:
        """The patient with this key, PHI opened; an empty record when it is missing."""
        value = txn.get(pkey, db=self._db["patients"])
        return PatientRecord() if value is None else self.env.sealer.decode(PatientRecord, value, "patients", pkey)

    def delete_study(self, study_uid: str, now: float) -> DeletedStudy:
        """Removes a study, its series and instances, and every index entry that
        names them, in one transaction; blobs whose last instance went are moved
        to doomed_blobs, where ``destroy_doomed`` finds them (crash-safe: the
        files go only after this commit, and a crash between is redone)."""
        return self.env.write(lambda txn: self._delete_study(txn, study_uid, now), reserve_ok=True)

    def _delete_study(self, txn: lmdb.Transaction, study_uid: str, now: float) -> DeletedStudy:
        db, tags = self._db, self.env.tags
        skey = study_uid.encode()
        value = txn.get(skey, db=db["studies"])
        if value is None:
            raise NotFound(f"no study with Study Instance UID {study_uid}")
        # Opened: its accession number and date name the secondary entries to remove.
        study = self.env.sealer.decode(StudyRecord, value, "studies", skey)
        deleted = DeletedStudy(study_uid)
        for series_key in list(prefix_keys(txn, db["study_series"], keys.join(study_uid, b""))):
            series_uid = keys.last_part(series_key)
            for member_key in list(prefix_keys(txn, db["series_instances"], keys.join(series_uid, b""))):
                self._delete_instance(txn, keys.last_part(member_key), now, deleted)
                txn.delete(member_key, db=db["series_instances"])
            txn.delete(series_uid.encode(), db=db["series"])
            txn.delete(series_key, db=db["study_series"])
        txn.delete(study.patient_key + skey, db=db["patient_studies"])
        if study.accession_number:
            txn.delete(tags.accession(study.accession_number) + skey, db=db["by_accession"])
        if is_dicom_date(study.study_date):
            # The month stays in StudyMonths: it only says which buckets to look in.
            txn.delete(tags.study_month(keys.study_month(study.study_date)) + skey, db=db["by_study_date"])
        for modality in study.modalities:
            txn.delete(keys.join(modality, study_uid), db=db["by_modality"])
        for tier in study.tier_instances:
            txn.delete(keys.tier_lru_key(tier, study.last_access, study_uid), db=db["tier_lru"])
        txn.delete(skey, db=db["studies"])
        self._release_patient(txn, study)
        return deleted

    def _delete_instance(self, txn: lmdb.Transaction, sop_uid: str, now: float, deleted: DeletedStudy) -> None:
        db = self._db
        value = txn.get(sop_uid.encode(), db=db["instances"])
        if value is None:
            return
        instance = decode(InstanceRecord, value)
        txn.delete(sop_uid.encode(), db=db["instances"])
        deleted.sop_instance_uids.append(sop_uid)
        bkey = keys.blob_key(DigestFunction.BLAKE3, instance.digest)
        blob_value = txn.get(bkey, db=db["blobs"])
        release = False
        if blob_value is not None:
            blob = decode(BlobRecord, blob_value)
            blob.refcount -= 1
            if blob.refcount > 0:
                txn.put(bkey, encode(blob), db=db["blobs"])
            else:
                release = True
                txn.delete(bkey, db=db["blobs"])
                placement.count_blob_on_volume(txn, self.env, blob, -1)
                _add_counter(txn, db["meta"], STORED_BYTES, -blob.size_bytes)
                txn.put(bkey, encode(blob), db=db["doomed_blobs"])
                deleted.blobs_released += 1
        if self.replicate:
            outbox.append(txn, self.env, OutboxEntry(
                sop_instance_uid=sop_uid, digest_function=DigestFunction.BLAKE3, digest=instance.digest,
                enqueued_at=now, delete=True, release_blob=release))

    def _release_patient(self, txn: lmdb.Transaction, study: StudyRecord) -> None:
        """One study fewer for its patient; a patient with none left goes, with its name entries."""
        db, pkey = self._db, study.patient_key
        value = txn.get(pkey, db=db["patients"])
        if value is None:
            return
        patient = decode(PatientRecord, value)  # counts are readable without opening the PHI
        patient.study_count -= 1
        patient.instance_count = max(0, patient.instance_count - study.instance_count)
        if patient.study_count > 0:
            txn.put(pkey, encode(patient), db=db["patients"])
            return
        opened = self.env.sealer.open(patient, "patients", pkey)
        if opened.patient_name:
            for name_key in keys.patient_name_keys(self.env.tags, opened.patient_name, pkey):
                txn.delete(name_key, db=db["by_patient_name"])
        txn.delete(pkey, db=db["patients"])

    def doomed_blobs(self) -> list[BlobRecord]:
        """Blobs whose last instance was deleted and whose files may still exist."""
        with self.env.read() as txn:
            return [decode(BlobRecord, v) for _, v in txn.cursor(db=self._db["doomed_blobs"])]

    def destroy_doomed(self, blob: BlobRecord, destroy: Callable[[BlobRecord], None]) -> bool:
        """Runs ``destroy`` (which removes the copy on the doomed record's volume), then forgets
        the record; False when the copy is in use again. When ``destroy`` fails the record stays,
        for a later try.

        The caller holds the blob's ingest lock (see Archive), so no store of the
        same bytes can be between finding that copy and indexing it; ``destroy``
        runs outside the index writer, so a slow volume (an object store) holds up
        no other commit.
        """
        bkey = keys.blob_key(blob.digest_function, blob.digest)
        with self.env.read() as txn:
            if txn.get(bkey, db=self._db["doomed_blobs"]) is None:
                return False
            live = txn.get(bkey, db=self._db["blobs"])
            # Stored again since, into this very copy: keep the copy, forget the record.
            in_use = live is not None and decode(BlobRecord, live).location.volume_id == blob.location.volume_id
        if not in_use:
            destroy(blob)

        def op(txn: lmdb.Transaction) -> bool:
            if txn.get(bkey, db=self._db["doomed_blobs"]) is None:
                return False
            txn.delete(bkey, db=self._db["doomed_blobs"])
            return not in_use

        return self.env.write(op, reserve_ok=True)

    def relocate(self, digest: Digest, location: BlobLocation, stored_bytes: int) -> None:
        """Points the blob at a fresh copy (after a repair), in one transaction."""

        def op(txn: lmdb.Transaction) -> None:
            value = txn.get(keys.blob_key(digest.function, digest.hash), db=self._db["blobs"])
            if value is not None:
                placement.relocate(txn, self.env, decode(BlobRecord, value), location.tier,
                                   location.volume_id, stored_bytes)

        self.env.write(op, reserve_ok=True)

    def count_repair(self) -> None:
        """One more blob repaired from the peer (shown in the replication status)."""
        self.env.write(lambda txn: _add_counter(txn, self._db["meta"], REPAIRS, 1), reserve_ok=True)

    def repairs(self) -> int:
        with self.env.read() as txn:
            raw = txn.get(REPAIRS, db=self._db["meta"])
        return int.from_bytes(raw, "little") if raw else 0

    # -- point reads ----------------------------------------------------

    def known_instance(self, sop_uid: str) -> InstanceRecord | None:
        with self.env.read() as txn:
            value = txn.get(sop_uid.encode(), db=self._db["instances"])
        return None if value is None else decode(InstanceRecord, value)

    def study(self, study_uid: str) -> StudyRecord | None:
        """The study as stored (PHI still sealed)."""
        with self.env.read() as txn:
            value = txn.get(study_uid.encode(), db=self._db["studies"])
        return None if value is None else decode(StudyRecord, value)

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
REPAIRS = b"blobs_repaired_from_peer"


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


def study_months(txn: lmdb.Transaction, env: IndexEnvironment) -> list[str]:
    """The months (YYYYMM) that have studies with a date, in order."""
    value = txn.get(keys.STUDY_MONTHS, db=env.dbs["meta"])
    if value is None:
        return []
    return list(env.sealer.decode(StudyMonths, value, "meta", keys.STUDY_MONTHS).months)


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
