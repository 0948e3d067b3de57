"""WADO-RS (PS3.18 10.4): instances as stored, metadata, bulk data and frames.

Instances leave byte for byte as they were stored (no transcoding: a
request for another transfer syntax is a 406), one multipart/related part
each, streamed: each instance is read and checked against its digest in a
worker thread just before it is sent, so a study is never held whole. A
credential revoked meanwhile stops the stream (``CredentialWatch``), as over
gRPC.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pacsvault.daemon.dicom import frames
from pacsvault.daemon.dicomweb import guard as routes
from pacsvault.daemon.dicomweb.guard import Call, CutOff, error_response
from pacsvault.daemon.dicomweb.media import Multipart, NotAcceptable, json_choice, multipart_choice
from pacsvault.daemon.dicomweb.services import Services
from pacsvault.daemon.errors import InvalidInput, NotFound, PacsvaultError
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord
from pacsvault.daemon.retrieval import Member
from pacsvault.daemon.security.stream_watch import CredentialWatch

WRITE_BYTES = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Retrieve:
    def __init__(self, services: Services) -> None:
        self._s = services

    # -- which instances a path names (in a worker thread, as the caller) --------

    def _members(self, path: dict[str, str]) -> list[Member]:
        retrieval = self._s.retrieval
        study, series, sop = path.get("study", ""), path.get("series", ""), path.get("instance", "")
        if sop:
            members = [retrieval.instance(sop)]
        elif series:
            members = retrieval.series_instances(series)
        else:
            members = retrieval.study_instances(study)
        members = [(i, b) for i, b in members if i.study_instance_uid == study
                   and (not series or i.series_instance_uid == series)]
        if not members:
            what = (f"instance {sop}" if sop else f"series {series}" if series else "study")
            raise NotFound(f"no {what} in study {study}" if sop or series else f"no study {study}")
        return members

    def _method(self, path: dict[str, str]) -> str:
        if path.get("instance"):
            return routes.GET_INSTANCE
        return routes.GET_SERIES if path.get("series") else routes.GET_STUDY

    # -- instances -------------------------------------------------------------------

    async def instances(self, request: web.Request) -> web.StreamResponse:
        path = dict(request.match_info)
        accept = request.headers.get("Accept")
        call, first = await self._s.guard.admit_then(request, self._method(path), _described(path),
                                                     self._first, path, accept)
        if isinstance(first, PacsvaultError):
            self._s.guard.finish(call, first)
            return error_response(first)
        return await self._stream(request, call, *first)

    def _first(self, path: dict[str, str], accept: str | None) -> tuple[list[Member], bytes]:
        """The members the path names, acceptable as asked, and the first one's bytes (the status
        is chosen only once they are known to be good)."""
        choice = multipart_choice(accept, "application/dicom", "an instance")
        members = self._members(path)
        wanted = choice.params.get("transfer-syntax", "*")
        if wanted != "*":
            other = [i.sop_instance_uid for i, _ in members if i.transfer_syntax_uid != wanted]
            if other:
                raise NotAcceptable(f"{len(other)} instance(s) are stored in another transfer syntax than "
                                    f"{wanted} (e.g. {other[0]}); this archive sends instances as stored: "
                                    "ask for transfer-syntax=*")
        return members, self._s.retrieval.read(*members[0])

    async def _stream(self, request: web.Request, call: Call, members: list[Member],
                      first: bytes) -> web.StreamResponse:
        multipart = Multipart("application/dicom")
        root, sent = self._s.root(request), 0
        if len(members) == 1:  # one instance: one write, with a length, no chunked framing
            self._s.guard.finish(call, "OK", messages=1)
            return web.Response(body=_part(multipart, members[0][0], first, root) + multipart.end(),
                                headers={"Content-Type": multipart.content_type})
        response = web.StreamResponse(headers={"Content-Type": multipart.content_type})
        watch = CredentialWatch(self._s.credentials, call.principal)
        try:
            await response.prepare(request)
            for instance, blob in members:
                data = first if not sent else \
                    await self._s.guard.run(call.principal, self._checked_read, watch, instance, blob)
                if len(data) <= WRITE_BYTES:
                    await response.write(_part(multipart, instance, data, root))
                else:
                    await response.write(_part(multipart, instance, b"", root, len(data))[:-2])
                    await _write(response, data)
                sent += 1
            await response.write(multipart.end())
            await response.write_eof()
        except Exception as exc:
            self._s.guard.finish(call, exc, messages=sent)
            raise CutOff(f"{call.method} stopped after {sent} instance(s): {exc}") from exc
        self._s.guard.finish(call, "OK", messages=sent)
        return response

    def _checked_read(self, watch: CredentialWatch, instance: InstanceRecord, blob: BlobRecord) -> bytes:
        watch.check()
        return self._s.retrieval.read(instance, blob)

    # -- metadata ----------------------------------------------------------------------

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        path = dict(request.match_info)
        call = await self._s.guard.admit(request, routes.GET_METADATA, _described(path))
        try:
            json_choice(request.headers.get("Accept"), "metadata")
            root = self._s.root(request)
            body = await self._s.guard.run(call.principal, self._metadata, path, root)
        except PacsvaultError as exc:
            self._s.guard.finish(call, exc)
            return error_response(exc)
        self._s.guard.finish(call, "OK", messages=body.count(b'"00080018"'))
        return web.Response(body=body, content_type="application/dicom+json")

    def _metadata(self, path: dict[str, str], root: str) -> bytes:
        members = self._members(path)
        objects = [text for _, text, _ in self._s.retrieval.metadata(members, root)]
        return ("[" + ",".join(objects) + "]").encode()

    # -- bulk data and frames --------------------------------------------------------

    async def bulkdata(self, request: web.Request) -> web.StreamResponse:
        path = dict(request.match_info)
        call = await self._s.guard.admit(request, routes.GET_INSTANCE, _described(path))
        try:
            multipart_choice(request.headers.get("Accept"), "application/octet-stream", "bulk data")
            number = int(path["number"]) if path["number"].isdigit() else 0
            value = await self._s.guard.run(call.principal, self._bulk, path, number)
        except PacsvaultError as exc:
            self._s.guard.finish(call, exc)
            return error_response(exc)
        return await self._octets(request, call, [value])

    def _bulk(self, path: dict[str, str], number: int) -> bytes:
        (instance, blob), = self._members(path)
        value = self._s.retrieval.bulk_value(instance, blob, number) if number else None
        if value is None:
            raise NotFound(f"instance {instance.sop_instance_uid} has no bulk data {path['number']}")
        return value

    async def frames(self, request: web.Request) -> web.StreamResponse:
        path = dict(request.match_info)
        call = await self._s.guard.admit(request, routes.GET_INSTANCE, _described(path))
        try:
            choice = multipart_choice(request.headers.get("Accept"), "application/octet-stream", "a frame")
            if choice.params.get("transfer-syntax", "*") not in ("*", frames.EXPLICIT_LITTLE, frames.IMPLICIT_LITTLE):
                raise NotAcceptable("frames are given uncompressed only (transfer-syntax=*, "
                                    f"{frames.EXPLICIT_LITTLE} or {frames.IMPLICIT_LITTLE})")
            numbers = _frame_numbers(path["frames"])
            wanted = await self._s.guard.run(call.principal, self._frames, path, numbers)
        except PacsvaultError as exc:
            self._s.guard.finish(call, exc)
            return error_response(exc)
        return await self._octets(request, call, wanted)

    def _frames(self, path: dict[str, str], numbers: list[int]) -> list[bytes]:
        (instance, blob), = self._members(path)
        if instance.transfer_syntax_uid not in frames.UNCOMPRESSED:
            raise NotAcceptable(f"instance {instance.sop_instance_uid} is stored in transfer syntax "
                                f"{instance.transfer_syntax_uid}; frames are given for uncompressed ones only: "
                                "retrieve the instance instead")
        return frames.extract(self._s.retrieval.read(instance, blob), numbers, instance.sop_instance_uid)

    async def _octets(self, request: web.Request, call: Call, values: list[bytes]) -> web.StreamResponse:
        multipart = Multipart("application/octet-stream")
        response = web.StreamResponse(headers={"Content-Type": multipart.content_type})
        await response.prepare(request)
        for value in values:
            await response.write(multipart.head("application/octet-stream", len(value)))
            await _write(response, value)
        await response.write(multipart.end())
        await response.write_eof()
        self._s.guard.finish(call, "OK", messages=len(values))
        return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    view = memoryview(data)
    for at in range(0, len(view), WRITE_BYTES):
        await response.write(view[at: at + WRITE_BYTES])
    await response.write(b"\r\n")


def _part(multipart: Multipart, instance: InstanceRecord, data: bytes, root: str, length: int = -1) -> bytes:
    """One instance's part, framing included (``length`` for a part whose bytes are written after)."""
    location = (f"{root}/studies/{instance.study_instance_uid}/series/{instance.series_instance_uid}"
                f"/instances/{instance.sop_instance_uid}")
    head = multipart.head(f"application/dicom; transfer-syntax={instance.transfer_syntax_uid}",
                          len(data) if length < 0 else length, location)
    return head + data + b"\r\n"


def _frame_numbers(text: str) -> list[int]:
    parts = text.split(",")
    if not all(p.isdigit() and int(p) >= 1 for p in parts) or len(parts) > 4096:
        raise InvalidInput(f"frame list {text[:64]!r} must be frame numbers from 1, separated by commas")
    return [int(p) for p in parts]


def _described(path: dict[str, str]) -> dict[str, object]:
    """The audit record's identifiers, named as the gRPC requests name them."""
    names = {"study": "study_instance_uid", "series": "series_instance_uid", "instance": "sop_instance_uid"}
    return {names[k]: v[:128] for k, v in path.items() if k in names}
