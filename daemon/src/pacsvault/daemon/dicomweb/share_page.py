"""The share page: what a share grant's holder opens in an ordinary browser.

``GET /share/<token>`` asks for the PIN when the grant has one, else lists
the studies it grants (date, modalities, description, instance count), each
with a download button: ``POST /share/<token>/download`` answers the study
as a ZIP, streamed from the archive (each instance read, checked against
its digest and written as the ZIP goes; nothing holds the whole study).
Plain HTML forms, no script; the PIN travels in the POST body only.

The grant is the token in the path; everything else is the gRPC API's:
the share's scope narrows the listing (a Find) and the download (a
GetStudy), each counts a use, five wrong PINs lock the grant, and the audit
trail records each. An unknown, expired, used-up or revoked token, and any
other path, answers 404.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import string
import zipfile
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from pacsvault.daemon import errors
from pacsvault.daemon.dicom import uid as uids
from pacsvault.daemon.dicomweb import guard as routes
from pacsvault.daemon.dicomweb.guard import CutOff
from pacsvault.daemon.dicomweb.services import Services
from pacsvault.daemon.index.query import Level, Match, Query
from pacsvault.daemon.index.records import CredentialRecord
from pacsvault.daemon.retrieval import Member
from pacsvault.daemon.security.stream_watch import CredentialWatch

_PAGE = string.Template(Path(__file__).with_name("share_page.html").read_text(encoding="utf-8"))
_HEADERS = {
    # The token is in the URL: no referrer leaves, nothing is cached, no other site frames the page.
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}
_ZIP_CHUNK = 256 * 1024


class SharePage:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def show(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        grant = await self._grant(token)
        if grant.pin_hash:
            return _page(grant, _pin_form(token, ""))
        return await self._listing(request, token, grant, "")

    async def with_pin(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        grant = await self._grant(token)
        pin = str((await _form(request)).get("pin", ""))[:64]
        return await self._listing(request, token, grant, pin)

    async def _grant(self, token: str) -> CredentialRecord:
        grant = await self._s.guard.run(None, self._s.credentials.live_share, token)
        if grant is None:
            raise web.HTTPNotFound(text="Not found\n")
        return grant

    async def _listing(self, request: web.Request, token: str, grant: CredentialRecord,
                       pin: str) -> web.StreamResponse:
        try:
            call = await self._s.guard.admit(request, routes.FIND, {"level": "study"}, f"Bearer {token}", pin,
                                             door="share-page")
        except errors.Unauthenticated:
            if grant.pin_hash and await self._grant(token):  # 404 once five wrong PINs locked it
                return _page(grant, _pin_form(token, "That PIN is not right."), status=401)
            raise web.HTTPNotFound(text="Not found\n") from None
        matches = await self._s.guard.run(call.principal, self._studies)
        self._s.guard.finish(call, "OK", messages=len(matches))
        rows = "".join(_study_row(token, pin, m) for m in matches) or \
            '<tr><td colspan="5">No images are shared here any more.</td></tr>'
        table = ("<table><tr><th>Date</th><th>Modality</th><th>Description</th><th>Images</th><th></th></tr>"
                 f"{rows}</table>")
        return _page(grant, table)

    def _studies(self) -> list[Match]:
        found, token = [], ""
        while True:  # the share's scope narrows this to its study or patient
            page, token = self._s.search.find(Query(Level.STUDY), self._s.limits.max_page_size, token)
            found.extend(page)
            if not token:
                return sorted(found, key=lambda m: m.study.study_date if m.study else "", reverse=True)

    async def download(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        await self._grant(token)
        form = await _form(request)
        pin, study = str(form.get("pin", ""))[:64], str(form.get("study", ""))
        try:
            uids.check(study, "study")
            call = await self._s.guard.admit(request, routes.GET_STUDY, {"study_instance_uid": study},
                                             f"Bearer {token}", pin, door="share-page")
            members = await self._s.guard.run(call.principal, self._s.retrieval.study_instances, study)
        except errors.PacsvaultError:
            raise web.HTTPNotFound(text="Not found\n") from None
        if not members:
            self._s.guard.finish(call, "NOT_FOUND")
            raise web.HTTPNotFound(text="Not found\n")
        response = web.StreamResponse(headers={
            **_HEADERS, "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="study-{study}.zip"'})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        sink = _ResponseSink(response, loop)
        watch = CredentialWatch(self._s.credentials, call.principal)
        try:
            sent = await self._s.guard.run(call.principal, self._zip, members, sink, watch)
            await response.write_eof()
        except Exception as exc:
            self._s.guard.finish(call, exc)
            raise CutOff(f"the ZIP of study {study} stopped: {exc}") from exc  # the browser sees it fail
        self._s.guard.finish(call, "OK", messages=sent)
        return response

    def _zip(self, members: list[Member], sink: _ResponseSink, watch: CredentialWatch) -> int:
        """Writes the ZIP in this worker thread; each instance is read and checked just before it goes."""
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for instance, blob in members:
                watch.check()
                data = self._s.retrieval.read(instance, blob)
                name = f"{instance.series_instance_uid}/{instance.sop_instance_uid}.dcm"
                archive.writestr(zipfile.ZipInfo(name, _zip_time(instance.stored_at)), data)
        sink.flush()
        return len(members)


async def _form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The posted form; a body that is no form is the caller's error (400), never the daemon's."""
    try:
        return await request.post()
    except (ValueError, HttpProcessingError) as exc:
        raise web.HTTPBadRequest(text=f"the form could not be read: {exc}\n") from None


class _ResponseSink:
    """A write-only file for zipfile, in a worker thread: hands the bytes to the event loop, and waits
    for each chunk to be taken, so a slow browser slows the reading rather than filling memory."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response, self._loop = response, loop
        self._buffer = bytearray()
        self._written = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._written += len(data)
        if len(self._buffer) >= _ZIP_CHUNK:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        """zipfile closes its file; the response is ended by the handler, after the last flush."""

    def flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            asyncio.run_coroutine_threadsafe(self._response.write(chunk), self._loop).result()


def _zip_time(stored_at: float) -> tuple[int, int, int, int, int, int]:
    moment = datetime.datetime.fromtimestamp(max(stored_at, 315532800), datetime.UTC)  # ZIP starts in 1980
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _page(grant: CredentialRecord, content: str, status: int = 200) -> web.Response:
    expires = datetime.datetime.fromtimestamp(grant.expires_at, datetime.UTC).strftime("%d %B %Y, %H:%M UTC")
    body = _PAGE.substitute(content=content, expires=html.escape(expires),
                            pin_note=" and its PIN" if grant.pin_hash else "")
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8", headers=_HEADERS)


def _pin_form(token: str, problem: str) -> str:
    shown = f'<p class="problem" id="problem">{html.escape(problem)}</p>' if problem else ""
    return (f'{shown}<form method="post" action="/share/{html.escape(token)}">'
            '<p><label for="pin">Enter the PIN you were given:</label></p>'
            '<p><input type="password" id="pin" name="pin" inputmode="numeric" autocomplete="off" '
            'maxlength="32" required autofocus> <button type="submit" id="open">Open</button></p></form>')


def _study_row(token: str, pin: str, match: Match) -> str:
    study = match.study
    assert study is not None
    date = study.study_date
    shown_date = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date or "unknown"
    cells = [shown_date, ", ".join(study.modalities), study.study_description or "(no description)",
             str(study.instance_count)]
    button = (f'<form class="inline" method="post" action="/share/{html.escape(token)}/download">'
              f'<input type="hidden" name="pin" value="{html.escape(pin)}">'
              f'<input type="hidden" name="study" value="{html.escape(study.study_instance_uid)}">'
              f'<button type="submit" class="download">Download (ZIP)</button></form>')
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{button}</td></tr>"
