"""Versioned index values: one schema byte, then a protobuf record.

Readers for every version that was ever written stay here, each with a test,
so an appliance upgraded in place reads what it wrote years ago.

* Schema 1: the record as it is.
* Schema 2: a record that carries PHI, with encryption on. Its PHI fields
  (``PHI_FIELDS``) are empty and sealed together in its ``sealed`` field,
  AES-256-GCM with the record's database and key as associated data, so a
  value copied under another key fails to open. Everything else stays
  readable without the key: tiering, placement and ingest update counts,
  tiers and access times without opening (or re-sealing) anything, and a
  daemon that predates sealing refuses the value instead of reading a
  record with no name in it.

A record is sealed once, when it is made; its PHI never changes after that.
``RecordSealer.open`` fills the PHI fields in and keeps ``sealed``, and
``encode`` leaves PHI fields out whenever ``sealed`` is set, so an opened
record written back can never put its PHI on disk in plain.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from pacsvault.daemon.crypto.sealing import SealingKey
from pacsvault.daemon.errors import DataLoss
from pacsvault.index.v1 import records_pb2

SCHEMA_VERSION = 1
SEALED_SCHEMA_VERSION = 2
_VERSION_BYTE = bytes([SCHEMA_VERSION])
_SEALED_VERSION_BYTE = bytes([SEALED_SCHEMA_VERSION])

PatientRecord = records_pb2.PatientRecord
StudyRecord = records_pb2.StudyRecord
SeriesRecord = records_pb2.SeriesRecord
InstanceRecord = records_pb2.InstanceRecord
BlobRecord = records_pb2.BlobRecord
BlobLocation = records_pb2.BlobLocation
VolumeRecord = records_pb2.VolumeRecord
MoveIntent = records_pb2.MoveIntent
OutboxEntry = records_pb2.OutboxEntry
CredentialRecord = records_pb2.CredentialRecord
RevocationRecord = records_pb2.RevocationRecord
BreakGlassGrant = records_pb2.BreakGlassGrant
StudyMonths = records_pb2.StudyMonths
CommitmentRecord = records_pb2.CommitmentRecord
WitnessKey = records_pb2.WitnessKey
DeletionRequest = records_pb2.DeletionRequest
LegalHold = records_pb2.LegalHold
TrashedInstance = records_pb2.TrashedInstance
ScrubState = records_pb2.ScrubState
IntegrityProblem = records_pb2.IntegrityProblem
LostReplica = records_pb2.LostReplica

M = TypeVar("M", bound=Message)

# The fields each PHI-carrying record seals. Counts, UIDs, modalities, tiers
# and times of storage and access are not PHI and stay readable.
PHI_FIELDS: dict[type[Message], tuple[str, ...]] = {
    PatientRecord: ("patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date", "patient_sex"),
    StudyRecord: ("study_date", "study_time", "accession_number", "study_description", "study_id",
                  "referring_physician_name"),
    SeriesRecord: ("series_number", "series_description"),
    # A share's patient (PatientID NUL issuer).
    CredentialRecord: ("patient_key",),
    StudyMonths: ("months",),
    # Why a study is to be deleted may name its patient.
    DeletionRequest: ("reason",),
}


def encode(record: Message) -> bytes:
    phi = PHI_FIELDS.get(type(record))
    if phi is not None and record.sealed:  # type: ignore[attr-defined]
        return _SEALED_VERSION_BYTE + _without(record, phi).SerializeToString()
    return _VERSION_BYTE + record.SerializeToString()


def decode(cls: type[M], value: bytes) -> M:
    """The record as stored; PHI fields stay sealed (see RecordSealer.open)."""
    version = value[0] if value else None
    sealed = version == SEALED_SCHEMA_VERSION and cls in PHI_FIELDS
    if version != SCHEMA_VERSION and not sealed:
        raise DataLoss(f"index record of schema version {version} is not readable by this version")
    record = cls()
    try:
        record.ParseFromString(value[1:])
    except DecodeError as exc:
        raise DataLoss(f"damaged {cls.__name__} in the index: {exc}") from exc
    if sealed and not record.sealed:  # type: ignore[attr-defined]
        raise DataLoss(f"damaged {cls.__name__} in the index: schema {version} without its sealed fields")
    return record


def _without(record: M, fields: tuple[str, ...]) -> M:
    for name in fields:  # a loop, not any(): this runs for every sealed record written
        if getattr(record, name):
            break
    else:
        return record
    bare = type(record)()
    bare.CopyFrom(record)
    for name in fields:
        bare.ClearField(name)
    return bare


def place(db: str, key: bytes) -> bytes:
    """The associated data of a sealed value: where it belongs."""
    return db.encode() + b"\x00" + key


class RecordSealer:
    """Seals and opens the PHI fields of index records; with encryption off
    (no key) records keep their PHI inline and it does nothing."""

    def __init__(self, key: SealingKey | None) -> None:
        self._key = key

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def seal(self, record: M, db: str, key: bytes) -> M:
        """Seals a new record's PHI fields for its place; they stay set in memory."""
        if self._key is None:
            return record
        if record.sealed:  # type: ignore[attr-defined]
            # Re-sealing an unopened record would seal its empty PHI fields over the real ones.
            raise ValueError(f"{type(record).__name__} is sealed already; PHI is sealed once, when made")
        fields = PHI_FIELDS[type(record)]
        phi = type(record)()
        for name in fields:
            _copy_field(record, phi, name)
        record.sealed = self._key.seal(phi.SerializeToString(), place(db, key))  # type: ignore[attr-defined]
        return record

    def open(self, record: M, db: str, key: bytes) -> M:
        """Fills in the record's PHI fields; DataLoss when they were changed, moved or stored unsealed."""
        what = f"{type(record).__name__} in {db}"
        sealed = record.sealed  # type: ignore[attr-defined]
        if self._key is None:
            if sealed:
                raise DataLoss(f"{what} is sealed, but encryption is off")
            return record
        if not sealed:
            # A plain value where a sealed one belongs was not written by this daemon.
            raise DataLoss(f"{what} holds its PHI unsealed although encryption is on")
        phi = type(record)()
        try:
            phi.ParseFromString(self._key.open(sealed, place(db, key), what))
        except DecodeError as exc:
            raise DataLoss(f"damaged sealed fields of {what}: {exc}") from exc
        record.MergeFrom(phi)
        return record

    def decode(self, cls: type[M], value: bytes, db: str, key: bytes) -> M:
        """The record stored at ``key`` of ``db``, PHI included."""
        return self.open(decode(cls, value), db, key)

    def encode(self, record: Message, db: str, key: bytes) -> bytes:
        """A new record's value at ``key`` of ``db``."""
        return encode(self.seal(record, db, key))


def _copy_field(source: Message, target: Message, name: str) -> None:
    if source.DESCRIPTOR.fields_by_name[name].is_repeated:
        getattr(target, name).extend(getattr(source, name))
    else:
        setattr(target, name, getattr(source, name))
