"""Versioned index values: one schema byte, then a protobuf record.

Readers for every version that was ever written stay here, each with a test,
so an appliance upgraded in place reads what it wrote years ago.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from pacsvault.daemon.errors import DataLoss
from pacsvault.index.v1 import records_pb2

SCHEMA_VERSION = 1
_VERSION_BYTE = bytes([SCHEMA_VERSION])

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

M = TypeVar("M", bound=Message)


def encode(record: Message) -> bytes:
    return _VERSION_BYTE + record.SerializeToString()


def decode(cls: type[M], value: bytes) -> M:
    if not value or value[0] != SCHEMA_VERSION:
        version = value[0] if value else None
        raise DataLoss(f"index record of schema version {version} is not readable by this version")
    record = cls()
    try:
        record.ParseFromString(value[1:])
    except DecodeError as exc:
        raise DataLoss(f"damaged {cls.__name__} in the index: {exc}") from exc
    return record
