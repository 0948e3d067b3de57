"""Key layouts of the index's named databases.

No PHI appears in a key. Where a lookup needs PHI -- a PatientID and its
issuer, a patient name, an accession number, the month of a study date -- the
key holds a keyed tag of it instead (``IndexTags``): equal values give equal
tags, and without the appliance's key nothing else can be learnt from one,
not even by tagging guesses. What the tags still show to whoever holds the
disks is equality: which records share a PatientID, a name or its first
letters, an accession number, a study month. The values beside the keys are
sealed (see ``records``).

Decision: UIDs (study, series, SOP instance) stay in keys as they are. They
name objects, not people; every retrieve, the tier order, moves and
replication are keyed by them, and the peer already holds them.

Tags are fixed width, so a key that starts with one needs no separator (and
could not use NUL: a tag may hold any byte). UIDs are digits and dots and
modalities, tiers and volume ids are validated free of control characters,
so NUL separates the parts of the other composite keys unambiguously and
keeps prefix scans exact.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import blake3

_MS = struct.Struct(">Q")

SEP = b"\x00"
TAG_BYTES = 16
PATIENT_KEY_BYTES = 2 * TAG_BYTES
# Wildcard name queries whose literal start is at least this long scan one
# bucket of names; shorter ones scan every patient.
NAME_PREFIX_CHARS = 3
# trash_by_target: every trashed instance is also listed under this level and its study's UID.
TRASH_OF_STUDY = "of-study"
# meta: the sealed StudyMonths record.
STUDY_MONTHS = b"study_months"

# Named databases: name -> what maps to what.
DATABASES = {
    "meta": "setting -> value (stored_bytes, study_months, index_layout, ...)",
    "patients": "patient key (tag of PatientID + tag of PatientID NUL issuer) -> PatientRecord",
    "studies": "StudyInstanceUID -> StudyRecord",
    "series": "SeriesInstanceUID -> SeriesRecord",
    "instances": "SOPInstanceUID -> InstanceRecord",
    "blobs": "digest function byte + digest -> BlobRecord",
    "patient_studies": "patient key + StudyInstanceUID -> ''",
    "study_series": "StudyInstanceUID NUL SeriesInstanceUID -> ''",
    "series_instances": "SeriesInstanceUID NUL SOPInstanceUID -> ''",
    "by_accession": "tag of AccessionNumber + StudyInstanceUID -> ''",
    "by_study_date": "tag of the StudyDate's month (YYYYMM) + StudyInstanceUID -> ''",
    "by_modality": "Modality NUL StudyInstanceUID -> ''",
    "by_patient_name": "tag of the normalised PatientName, or of its first 3 characters, + patient key -> ''",
    "volumes": "volume id -> VolumeRecord",
    "volume_blobs": "volume id NUL digest function byte + digest -> ''",
    "tier_lru": "tier NUL last access (ms, 8 bytes big-endian) StudyInstanceUID -> ''",
    "moves": "digest function byte + digest -> MoveIntent",
    "doomed_blobs": "digest function byte + digest -> BlobRecord of a deleted blob whose copy is not yet destroyed",
    "outbox": "sequence number (8 bytes big-endian) -> OutboxEntry",
    "replica_records": "peer appliance name NUL SOPInstanceUID -> ReplicaRecord (the peer's instances)",
    "credentials": "SHA-256 of a bearer token -> CredentialRecord",
    "revoked_certificates": "identity URI, or 'serial:' + hex serial -> RevocationRecord",
    "break_glass": "principal identity -> BreakGlassGrant",
    "audit_checkpoints": "peer appliance name NUL sequence (8 bytes big-endian) -> its signed checkpoint JSON",
    "witness_keys": "peer appliance name -> WitnessKey (the key its audit checkpoints must be signed with)",
    "deletion_requests": "request id -> DeletionRequest (a study deletion waiting for a second admin)",
    "promotions": "StudyInstanceUID -> when it was asked for (8-byte big-endian double): the mover brings it up",
    "rewrap_pending": "digest function byte + digest -> '': sealed under a key version older than the active one",
    "commitments": "Transaction UID -> CommitmentRecord: a DICOM Storage Commitment request not yet reported",
    "lost_replicas": "peer appliance name NUL SOPInstanceUID -> LostReplica: the peer's, not rebuildable here",
    "peer_lost": "SOPInstanceUID -> LostReplica: ours, that the peer reported it cannot rebuild (being re-sent)",
    "legal_holds": "StudyInstanceUID -> LegalHold",
    "peer_holds": "peer appliance name NUL StudyInstanceUID -> LegalHold: the peer's studies held here too",
    "trash": "SOPInstanceUID -> TrashedInstance: deleted, restorable until its purge time",
    "trash_by_target": "what a delete named (level NUL UID), and 'of-study' NUL StudyInstanceUID, NUL SOPInstanceUID -> ''",
    "trash_by_purge": "purge time (ms, 8 bytes big-endian) SOPInstanceUID -> ''",
    "integrity_problems": "digest function byte + digest -> IntegrityProblem: found bad, not repaired yet",
}

# (value, purpose) -> TAG_BYTES; ApplianceKeys.index_tag, or plain_tag with encryption off.
Tagger = Callable[[str | bytes, bytes], bytes]

# With encryption off the values beside these keys hold their PHI in plain, so
# a secret tag key would hide nothing; a fixed, public one keeps one key layout
# and one code path for both modes, with nothing to store or lose.
_PLAIN_TAG_KEY = blake3.blake3(b"pacsvault/v1/index-tags: encryption off, not a secret").digest()


def plain_tag(value: str | bytes, purpose: bytes) -> bytes:
    """The tag of an index written with encryption off: ApplianceKeys.index_tag under a public key."""
    data = value.encode() if isinstance(value, str) else value
    return blake3.blake3(purpose + SEP + data, key=_PLAIN_TAG_KEY).digest(TAG_BYTES)


class IndexTags:
    """The tags that stand in for PHI in keys, one purpose each so that equal
    text in different roles (a PatientID equal to an accession number) gives
    unrelated tags."""

    def __init__(self, tag: Tagger) -> None:
        self._tag = tag

    def patient_id(self, patient_id: str) -> bytes:
        """The first half of the patient keys of ``patient_id``: the prefix that finds it under every issuer."""
        return self._tag(patient_id, b"patient-id")

    def patient_key(self, patient_id: str, issuer: str) -> bytes:
        return self.patient_id(patient_id) + self._tag(join(patient_id, issuer), b"patient-id-issuer")

    def patient_name(self, patient_name: str) -> bytes:
        return self._tag(normalise_name(patient_name), b"patient-name")

    def patient_name_prefix(self, normalised_start: str) -> bytes:
        """The bucket of every name whose normalised form starts with these NAME_PREFIX_CHARS characters."""
        return self._tag(normalised_start[:NAME_PREFIX_CHARS], b"patient-name-prefix")

    def accession(self, accession_number: str) -> bytes:
        return self._tag(accession_number, b"accession-number")

    def study_month(self, month: str) -> bytes:
        """The bucket of the studies of one month, YYYYMM."""
        return self._tag(month, b"study-month")


def patient_name_keys(tags: IndexTags, patient_name: str, patient_key: bytes) -> list[bytes]:
    """The by_patient_name entries of one patient: its exact name, and its name's first characters."""
    normalised = normalise_name(patient_name)
    found = [tags.patient_name(patient_name) + patient_key]
    if len(normalised) >= NAME_PREFIX_CHARS:
        found.append(tags.patient_name_prefix(normalised) + patient_key)
    return found


def after_tag(key: bytes, width: int = TAG_BYTES) -> str:
    """The UID that follows a fixed-width tag (or patient key) in a key."""
    return key[width:].decode()


def study_month(study_date: str) -> str:
    return study_date[:6]


def share_scope(patient_id: str, issuer: str) -> bytes:
    """A share's patient, as the sealed CredentialRecord keeps it: PatientID NUL issuer.

    An identity held in a sealed value, never an index key (the index keys a
    patient by IndexTags.patient_key).
    """
    return patient_id.encode() + SEP + issuer.encode()


def split_share_scope(scope: bytes) -> tuple[str, str]:
    patient_id, _, issuer = scope.partition(SEP)
    return patient_id.decode(), issuer.decode()



def join(*parts: bytes | str) -> bytes:
    return SEP.join(p.encode() if isinstance(p, str) else p for p in parts)


def last_part(key: bytes) -> str:
    return key.rpartition(SEP)[2].decode()


def normalise_name(patient_name: str) -> str:
    return patient_name.casefold()


def blob_key(function: int, digest: bytes) -> bytes:
    return bytes([function]) + digest


def volume_blob_key(volume_id: str, function: int, digest: bytes) -> bytes:
    return volume_id.encode() + SEP + blob_key(function, digest)


def split_volume_blob_key(key: bytes) -> tuple[int, bytes]:
    blob = key.split(SEP, 1)[1]
    return blob[0], blob[1:]


def tier_lru_key(tier: str, last_access: float, study_uid: str) -> bytes:
    # Big-endian milliseconds sort oldest first; fixed width, so the UID that
    # follows needs no separator.
    return tier.encode() + SEP + _MS.pack(max(0, int(last_access * 1000))) + study_uid.encode()


def split_tier_lru_key(key: bytes) -> tuple[float, str]:
    rest = key.split(SEP, 1)[1]
    return _MS.unpack_from(rest)[0] / 1000, rest[_MS.size :].decode()
