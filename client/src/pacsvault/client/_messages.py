"""What both clients send and get back: requests, results, instance framing, reading order."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import blake3
import pydicom

from pacsvault.client._errors import IntegrityError, PacsvaultError, ServerError, error_for_code
from pacsvault.v1 import archive_pb2, common_pb2

CHUNK_BYTES = 1024 * 1024
Level = Literal["patient", "study", "series", "instance"]
LEVELS: dict[str, archive_pb2.QueryLevel.ValueType] = {
    "patient": archive_pb2.QUERY_LEVEL_PATIENT,
    "study": archive_pb2.QUERY_LEVEL_STUDY,
    "series": archive_pb2.QUERY_LEVEL_SERIES,
    "instance": archive_pb2.QUERY_LEVEL_INSTANCE,
}
# One retrieved instance: its attributes (digest checked) and its bytes, or them parsed.
Instance = tuple[common_pb2.InstanceAttributes, bytes]
DatasetInstance = tuple[common_pb2.InstanceAttributes, pydicom.Dataset]
_STATUS = {archive_pb2.STORE_STATUS_STORED: "stored", archive_pb2.STORE_STATUS_DUPLICATE: "duplicate"}


@dataclass(frozen=True)
class StoreResult:
    """What happened to one file: ``status`` is stored, duplicate or rejected.

    A rejection is a result, not an exception: ``code`` is the gRPC status
    name (``INVALID_ARGUMENT``, ``ALREADY_EXISTS``, ...; ``LOCAL`` when the
    file could not be read) and ``message`` the appliance's words.
    """

    path: str
    status: str
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    digest: str = ""
    message: str = ""
    code: str = "OK"

    @property
    def ok(self) -> bool:
        return self.status != "rejected"

    def error(self) -> PacsvaultError | None:
        """The rejection as a member of the exception tree (None when not rejected)."""
        return None if self.ok else error_for_code(self.code, self.message)


@dataclass(frozen=True)
class InstanceMetadata:
    """One instance of ``iter_study_metadata``: its DICOM JSON (PS3.18 F) and the tier holding it."""

    sop_instance_uid: str
    tier: str
    dicom_json: dict[str, object]


# The largest file sent whole in one PutInstance message (the server's default message size, 4 MiB,
# less room for the envelope); larger ones are streamed in chunks with StoreInstance.
ONE_MESSAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024


def expected_digest(data: bytes) -> tuple[str, common_pb2.Digest]:
    """The file's BLAKE3, hex and as the API's Digest."""
    digest = blake3.blake3(data).hexdigest()
    return digest, common_pb2.Digest(function=common_pb2.DIGEST_FUNCTION_BLAKE3, hash=digest, size_bytes=len(data))


def store_requests(data: bytes) -> tuple[str, Iterator[archive_pb2.StoreInstanceRequest]]:
    """The file's BLAKE3 and its upload in chunks, the digest in the first one."""
    digest, expected = expected_digest(data)

    def chunks() -> Iterator[archive_pb2.StoreInstanceRequest]:
        yield archive_pb2.StoreInstanceRequest(data=data[:CHUNK_BYTES], expected_digest=expected)
        for at in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
            yield archive_pb2.StoreInstanceRequest(data=data[at : at + CHUNK_BYTES])

    return digest, chunks()


def store_result(path: str, response: archive_pb2.StoreInstanceResponse) -> StoreResult:
    return StoreResult(path, _STATUS.get(response.status, "rejected"), response.sop_instance_uid,
                       response.study_instance_uid, response.digest.hash, response.message)


def rejected(path: str, digest: str, error: PacsvaultError) -> StoreResult:
    return StoreResult(path, "rejected", digest=digest, message=error.details(), code=error.code().name)


@dataclass(frozen=True)
class FindFilter:
    """Matching keys of ``find``; empty keys match everything, set keys must all match."""

    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""  # case-insensitive; * any run of characters, ? one
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    accession_number: str = ""
    modality: str = ""
    study_date: str = ""  # YYYYMMDD or YYYYMMDD-YYYYMMDD, either side may be empty

    def request(self, level: Level, page_size: int) -> archive_pb2.FindRequest:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
        query = archive_pb2.QueryFilter(
            patient_id=self.patient_id, issuer_of_patient_id=self.issuer_of_patient_id,
            patient_name=self.patient_name, study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uid, accession_number=self.accession_number,
            modality=self.modality,
        )
        if self.study_date:
            start, dash, end = self.study_date.partition("-")
            query.study_date.CopyFrom(archive_pb2.DateRange(start=start, end=end if dash else start))
        return archive_pb2.FindRequest(level=LEVELS[level], filter=query, page_size=page_size)


class InstanceMessage(Protocol):
    """GetInstanceResponse, GetSeriesResponse and GetStudyResponse alike."""

    @property
    def instance(self) -> common_pb2.InstanceAttributes: ...
    @property
    def data(self) -> bytes: ...
    def HasField(self, field_name: Literal["instance"]) -> bool: ...  # noqa: N802 - protobuf's name


class InstanceAssembler:
    """Joins a stream's chunks into whole instances, each checked against its digest."""

    def __init__(self) -> None:
        self._current: common_pb2.InstanceAttributes | None = None
        self._parts: list[bytes] = []

    def feed(self, message: InstanceMessage) -> tuple[common_pb2.InstanceAttributes, bytes] | None:
        """The previous instance, complete, when this message starts a new one."""
        done = None
        if message.HasField("instance"):
            done = self.finish()
            self._current = message.instance
        self._parts.append(message.data)
        return done

    def finish(self) -> tuple[common_pb2.InstanceAttributes, bytes] | None:
        if self._current is None:
            return None
        attributes, data = self._current, b"".join(self._parts)
        self._current, self._parts = None, []
        check_digest(attributes, blake3.blake3(data).hexdigest(), len(data))
        return attributes, data


def check_digest(attributes: common_pb2.InstanceAttributes, received_hash: str, received_size: int) -> None:
    if received_hash != attributes.digest.hash or received_size != attributes.digest.size_bytes:
        raise IntegrityError(f"instance {attributes.sop_instance_uid}: received bytes fail their digest")


def safe_file_name(sop_instance_uid: str) -> str:
    """``<SOPInstanceUID>.dcm``; refuses a UID that could name another path."""
    if not sop_instance_uid or len(sop_instance_uid) > 64 or set(sop_instance_uid) - set("0123456789."):
        raise ServerError(f"the appliance sent an instance with an unusable SOP Instance UID {sop_instance_uid!r}")
    return f"{sop_instance_uid}.dcm"


def to_dataset(data: bytes) -> pydicom.Dataset:
    """A DICOM Part 10 file's bytes as a ``pydicom.Dataset`` (pixel data read lazily by pydicom)."""
    return pydicom.dcmread(io.BytesIO(data))


def number(text: str) -> int | float | None:
    """A DICOM IS / DS value as a number (None when empty or not a number)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def instance_order(series_number: str, series_uid: str, instance_number: str, sop_uid: str) -> tuple[object, ...]:
    """Reading order: series by SeriesNumber, then instances by InstanceNumber (numbers, not text)."""
    def key(text: str) -> tuple[int, float]:
        value = number(text)
        return (0, float(value)) if value is not None else (1, 0.0)

    return (*key(series_number), series_uid, *key(instance_number), sop_uid)


def match_order(match: common_pb2.Match) -> tuple[object, ...]:
    return instance_order(match.series.series_number, match.series.series_instance_uid,
                          match.instance.instance_number, match.instance.sop_instance_uid)


def metadata_order(item: InstanceMetadata) -> tuple[object, ...]:
    def value(tag: str) -> str:
        element = item.dicom_json.get(tag)
        values = element.get("Value") if isinstance(element, dict) else None
        return str(values[0]) if isinstance(values, list) and values else ""

    return instance_order(value("00200011"), value("0020000E"), value("00200013"), item.sop_instance_uid)


def metadata_item(message: archive_pb2.GetStudyMetadataResponse) -> InstanceMetadata:
    return InstanceMetadata(message.sop_instance_uid, message.tier, json.loads(message.dicom_json))
