"""STOW-RS (PS3.18 10.5): a multipart/related request of DICOM instances, each through ``Ingest.store``.

The request is read whole, part by part, before anything is stored (at
most ``web.max_request_bytes``, else 413): an upload cut off half way stores
nothing. Each instance is then stored on its own, durably, as over gRPC;
the answer lists every instance under ReferencedSOPSequence (00081199) or
FailedSOPSequence (00081198) with a failure reason: 200 when all were
stored, 202 when some were, 409 when none was.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pydicom
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from pacsvault.daemon import errors
from pacsvault.daemon.dicomweb import guard as routes
from pacsvault.daemon.dicomweb.guard import Call, error_response
from pacsvault.daemon.dicomweb.media import UnsupportedMediaType, dumps, json_choice, parse_media_type
from pacsvault.daemon.dicomweb.services import Services
from pacsvault.daemon.ingest import StoreResult

# Failure reasons (PS3.4 / PS3.18 STOW-RS): what a store that failed tells the sender.
PROCESSING_FAILURE = 0x0110
DUPLICATE_DIFFERENT = 0x0111  # "duplicate SOP Instance": the UID is stored with other bytes
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900  # the instance is not of the study the URL names
CANNOT_UNDERSTAND = 0xC000
_REASONS: tuple[tuple[type[errors.PacsvaultError], int], ...] = (
    (errors.InvalidInput, CANNOT_UNDERSTAND),
    (errors.Conflict, DUPLICATE_DIFFERENT),
    (errors.CapacityExhausted, OUT_OF_RESOURCES),
)


@dataclass
class Outcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    failure: int = 0
    message: str = ""


class Stow:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def store(self, request: web.Request) -> web.StreamResponse:
        study = request.match_info.get("study", "")
        call = await self._s.guard.admit(request, routes.STORE, {"study_instance_uid": study} if study else {})
        try:
            json_choice(request.headers.get("Accept"), "a store result")
            parts = await self._read_parts(request)
        except errors.PacsvaultError as exc:
            self._s.guard.finish(call, exc)
            return error_response(exc)
        outcomes = [await self._store_one(call, data, study) for data in parts]
        stored = sum(1 for o in outcomes if not o.failure)
        status = 200 if stored == len(outcomes) else 202 if stored else 409
        body = dumps(_result_json(outcomes, self._s.root(request), study))
        return web.Response(status=status, body=body, content_type="application/dicom+json")

    async def _read_parts(self, request: web.Request) -> list[bytes]:
        media = parse_media_type(request.headers.get("Content-Type", ""))
        if media.type != "multipart/related" or media.params.get("type", "").lower() != "application/dicom":
            raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom" (each part '
                                       f"a DICOM Part 10 file), not {request.headers.get('Content-Type', 'nothing')!r}")
        if "boundary" not in media.params:
            raise errors.InvalidInput("the multipart/related Content-Type has no boundary")
        limit = self._s.web.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise errors.TooLarge(f"the request of {request.content_length} bytes is over web.max_request_bytes "
                                  f"({limit}); nothing stored: send fewer instances at once")
        parts: list[bytes] = []
        total = 0
        try:
            reader = MultipartReader(request.headers, request.content)
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise errors.InvalidInput("nested multipart bodies are not taken")
                kind = parse_media_type(part.headers.get("Content-Type", "application/dicom")).type
                if kind != "application/dicom":
                    raise UnsupportedMediaType(f"part {len(parts) + 1} is {kind}; every part must be "
                                               "application/dicom")
                data = bytearray()
                while chunk := await part.read_chunk(256 * 1024):
                    total += len(chunk)
                    if total > limit:
                        raise errors.TooLarge(f"the request is over web.max_request_bytes ({limit}); nothing "
                                              "stored: send fewer instances at once")
                    data += chunk
                parts.append(bytes(data))
        except (ValueError, HttpProcessingError) as exc:  # aiohttp's words for a malformed multipart body
            raise errors.InvalidInput(f"the multipart/related body is malformed ({exc}); nothing stored") from exc
        if not parts:
            raise errors.InvalidInput("the multipart/related body holds no instance")
        return parts

    async def _store_one(self, call: Call, data: bytes, study: str) -> Outcome:
        try:
            result = await self._s.guard.run(call.principal, self._store, data, study)
        except errors.PacsvaultError as exc:
            outcome = await self._s.guard.run(None, _identified, data)  # a parse: off the loop
            outcome.failure = _reason(exc)
            outcome.message = str(exc)
            self._s.guard.finish(call, exc, sop_instance_uid=outcome.sop_instance_uid[:128])
            return outcome
        instance = result.instance
        self._s.guard.finish(call, "OK", sop_instance_uid=instance.sop_instance_uid,
                             series_instance_uid=instance.series_instance_uid,
                             study_instance_uid=instance.study_instance_uid, patient_id=instance.patient_id,
                             issuer_of_patient_id=instance.issuer_of_patient_id)
        return Outcome(instance.sop_class_uid, instance.sop_instance_uid, instance.study_instance_uid,
                       instance.series_instance_uid)

    def _store(self, data: bytes, study: str) -> StoreResult:
        if study:
            found = _identified(data)
            if found.study_instance_uid and found.study_instance_uid != study:
                raise _StudyMismatch(f"the instance is of study {found.study_instance_uid}, not of {study} "
                                     "the URL names; nothing stored")
        return self._s.ingest.store(data)


class _StudyMismatch(errors.InvalidInput):
    pass


def _reason(exc: errors.PacsvaultError) -> int:
    if isinstance(exc, _StudyMismatch):
        return STUDY_MISMATCH
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return PROCESSING_FAILURE


def _identified(data: bytes) -> Outcome:
    """The UIDs of a part, as far as they can be read (a failed store still names its instance)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                                 specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
        return Outcome(str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")),
                       str(ds.get("StudyInstanceUID", "")))
    except Exception:  # noqa: BLE001 - unreadable: the failure reason says so already
        return Outcome("", "")


def _result_json(outcomes: list[Outcome], root: str, study: str) -> dict[str, object]:
    def uid(value: str) -> dict[str, object]:
        return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}

    stored = [o for o in outcomes if not o.failure]
    failed = [o for o in outcomes if o.failure]
    result: dict[str, object] = {}
    studies = {o.study_instance_uid for o in stored}
    if study or len(studies) == 1:
        result["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{study or next(iter(studies))}"]}
    if failed:
        result["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": uid(o.sop_class_uid), "00081155": uid(o.sop_instance_uid),
             "00081197": {"vr": "US", "Value": [o.failure]}} for o in failed]}
    if stored:
        result["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": uid(o.sop_class_uid), "00081155": uid(o.sop_instance_uid),
             "00081190": {"vr": "UR", "Value": [f"{root}/studies/{o.study_instance_uid}/series/"
                                                f"{o.series_instance_uid}/instances/{o.sop_instance_uid}"]}}
            for o in stored]}
    return dict(sorted(result.items()))
