"""The QIDO-RS routes: /studies, /series, /instances, and those under a study or series."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from pacsvault.daemon.dicomweb import guard as routes
from pacsvault.daemon.dicomweb import qido
from pacsvault.daemon.dicomweb.guard import error_response
from pacsvault.daemon.dicomweb.media import dumps, json_choice
from pacsvault.daemon.dicomweb.services import Services
from pacsvault.daemon.errors import PacsvaultError
from pacsvault.daemon.index.query import Level, Match

_FIXED = {"study": "study_instance_uid", "series": "series_instance_uid"}
_LEVEL_NAMES = {Level.STUDY: "study", Level.SERIES: "series", Level.INSTANCE: "instance"}


class Find:
    def __init__(self, services: Services) -> None:
        self._s = services

    def handler(self, level: Level) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._find(request, level)
        return handle

    async def _find(self, request: web.Request, level: Level) -> web.StreamResponse:
        fixed = {_FIXED[k]: v for k, v in request.match_info.items() if k in _FIXED}
        what: dict[str, object] = {"level": _LEVEL_NAMES[level], **fixed}
        parsed: qido.QidoRequest | None = None
        problem: PacsvaultError | None = None
        try:
            parsed = qido.parse(level, list(request.query.items()), fixed, self._s.limits.max_page_size)
        except PacsvaultError as exc:
            problem = exc
        patient = {q.patient_id for q in parsed.queries if q.patient_id} if parsed else set()
        if len(patient) == 1:
            what["patient_id"] = next(iter(patient))[:128]
        call, found = await self._s.guard.admit_then(request, routes.FIND, what, self._answer, parsed, problem,
                                                     request.headers.get("Accept"), self._s.root(request))
        if isinstance(found, PacsvaultError):
            self._s.guard.finish(call, found)
            return error_response(found)
        body, count, more = found
        assert parsed is not None
        warnings = list(parsed.warnings)
        if more:
            warnings.append('299 pacsvault "there are more results: ask again with offset"')
        self._s.guard.finish(call, "OK", messages=count)
        headers = {"Warning": ", ".join(warnings)} if warnings else None
        return web.Response(body=body, content_type="application/dicom+json", headers=headers)

    def _answer(self, parsed: qido.QidoRequest | None, problem: PacsvaultError | None, accept: str | None,
                root: str) -> tuple[bytes, int, bool]:
        """The JSON body, the number of results, whether more are left (in a worker thread, as the caller)."""
        if problem is not None:
            raise problem  # answered once the caller is admitted: strangers learn nothing from it
        assert parsed is not None
        json_choice(accept, "a query result")
        matches, more = qido.page_slice(self._all(parsed), parsed)
        return dumps([qido.match_json(m, parsed.queries[0].level, root) for m in matches]), len(matches), more

    def _all(self, parsed: qido.QidoRequest) -> Iterator[Match]:
        """Every match of every query (one per value of a list), each result once, page by page."""
        seen: set[str] = set()
        page_size = self._s.limits.max_page_size
        wanted = parsed.offset + parsed.limit + 1
        for query in parsed.queries:
            token = ""
            while True:
                size = min(page_size, max(1, wanted - len(seen))) if not parsed.sop_instance_uids else page_size
                page, token = self._s.search.find(query, size, token)
                for match in page:
                    key = qido.result_key(match, query.level)
                    if key not in seen:
                        seen.add(key)
                        yield match
                if not token:
                    break
