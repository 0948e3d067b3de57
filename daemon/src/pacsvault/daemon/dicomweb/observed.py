"""Every DICOMweb and share-page request, counted, timed and given its access-log line.

The route's template (``/dicom-web/studies/{study}/series``), never the path
itself, names the request in metrics and in the log: a path carries UIDs,
and a share link carries its token. Requests that match no route count as
``unmatched``. A streamed answer is timed until its last byte is written.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from pacsvault.daemon.dicomweb.guard import CutOff, principal_of, peer_of
from pacsvault.daemon.instruments import Instruments
from pacsvault.daemon.service.access_log import AccessLog

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def observing(meters: Instruments, access: AccessLog) -> Middleware:
    """The middleware, outermost, so it sees the status every other layer settled on."""

    @web.middleware
    async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status: int | str = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except CutOff:
            status = "cut_off"  # the status line had left already; the body was cut short on purpose
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = _route(request)
            meters.http_requests.labels(route, request.method, str(status)).inc()
            meters.http_request_seconds.labels(route, request.method).observe(elapsed)
            access.record([("door", "share-page" if route.startswith("/share/") else "dicomweb"),
                           ("handler", route), ("method", request.method), ("code", status),
                           ("principal", principal_of(request)), ("peer", peer_of(request)),
                           ("duration_ms", elapsed * 1000)])

    return observed


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
