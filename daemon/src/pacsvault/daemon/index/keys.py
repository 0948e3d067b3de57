"""Key layouts of the index's named databases.

UIDs are digits and dots, and patient IDs, issuers and accession numbers are
validated free of control characters at ingest, so NUL separates the parts of
a composite key unambiguously and keeps prefix scans exact.
"""

from __future__ import annotations

import struct

_MS = struct.Struct(">Q")

SEP = b"\x00"

# Named databases: name -> what maps to what.
DATABASES = {
    "meta": "setting -> value",
    "patients": "patient key -> PatientRecord",
    "studies": "StudyInstanceUID -> StudyRecord",
    "series": "SeriesInstanceUID -> SeriesRecord",
    "instances": "SOPInstanceUID -> InstanceRecord",
    "blobs": "digest function byte + digest -> BlobRecord",
    "patient_studies": "patient key NUL StudyInstanceUID -> ''",
    "study_series": "StudyInstanceUID NUL SeriesInstanceUID -> ''",
    "series_instances": "SeriesInstanceUID NUL SOPInstanceUID -> ''",
    "by_accession": "AccessionNumber NUL StudyInstanceUID -> ''",
    "by_study_date": "StudyDate (YYYYMMDD) NUL StudyInstanceUID -> ''",
    "by_modality": "Modality NUL StudyInstanceUID -> ''",
    "by_patient_name": "casefolded PatientName NUL patient key -> ''",
    "volumes": "volume id -> VolumeRecord",
    "volume_blobs": "volume id NUL digest function byte + digest -> ''",
    "tier_lru": "tier NUL last access (ms, 8 bytes big-endian) StudyInstanceUID -> ''",
    "moves": "digest function byte + digest -> MoveIntent",
    "outbox": "sequence number (8 bytes big-endian) -> OutboxEntry",
    "replica_records": "peer appliance name NUL SOPInstanceUID -> ReplicaRecord (the peer's instances)",
    "credentials": "SHA-256 of a bearer token -> CredentialRecord",
    "revoked_certificates": "identity URI, or 'serial:' + hex serial -> RevocationRecord",
    "break_glass": "principal identity -> BreakGlassGrant",
    "audit_checkpoints": "peer appliance name NUL sequence (8 bytes big-endian) -> its signed checkpoint JSON",
}


def patient_key(patient_id: str, issuer: str) -> bytes:
    # PatientID first, so one prefix scan finds a PatientID under every issuer.
    return patient_id.encode() + SEP + issuer.encode()


def split_patient_key(key: bytes) -> tuple[str, str]:
    patient_id, _, issuer = key.partition(SEP)
    return patient_id.decode(), issuer.decode()


def join(*parts: bytes | str) -> bytes:
    return SEP.join(p.encode() if isinstance(p, str) else p for p in parts)


def last_part(key: bytes) -> str:
    return key.rpartition(SEP)[2].decode()


def name_key(patient_name: str) -> bytes:
    return normalise_name(patient_name).encode()


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
