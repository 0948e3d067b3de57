"""Who is calling, whether they may, and the audit record of what they do: the gRPC API's rules over HTTP.

Each HTTP route is the HTTP form of one gRPC method (``ROUTE_METHODS``), so
the one access table (``security/access_table.py``) decides who may call it
and the audit trail records it under that method's name, with the fields the
gRPC ``AuditInterceptor`` writes (ATNA export maps them unchanged). The
caller's principal is set as ``current_principal`` in the thread that runs
the use case, so a share grant narrows exactly as over gRPC.

Credentials: ``Authorization: Bearer <token>`` (an access token or a share
grant; ``X-Pacsvault-Pin`` carries a share's PIN), the client certificate
TLS verified, or neither on a loopback listener.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from pacsvault.daemon import errors
from pacsvault.daemon.audit.recorder import DURABLE_AT_COMMIT
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.dicomweb.media import NotAcceptable, UnsupportedMediaType
from pacsvault.daemon.security.access_table import allowed_roles
from pacsvault.daemon.security.principals import ClientCertificate, Principal, PrincipalResolver, certificate_from_der
from pacsvault.daemon.security.scope import current_principal

log = logging.getLogger("pacsvault.dicomweb")
T = TypeVar("T")

_ARCHIVE = "/pacsvault.v1.ArchiveService/"
# Each route's gRPC twin: its entry in the access table and its name in the audit trail.
FIND = _ARCHIVE + "Find"
GET_STUDY = _ARCHIVE + "GetStudy"
GET_SERIES = _ARCHIVE + "GetSeries"
GET_INSTANCE = _ARCHIVE + "GetInstance"
GET_METADATA = _ARCHIVE + "GetStudyMetadata"
STORE = _ARCHIVE + "StoreInstance"
READ_ONLY = frozenset({FIND, GET_STUDY, GET_SERIES, GET_INSTANCE, GET_METADATA})
ROUTE_METHODS = READ_ONLY | {STORE}

# Most specific first, like service/status.py's table for gRPC.
_STATUS: tuple[tuple[type[errors.PacsvaultError], int], ...] = (
    (NotAcceptable, 406),
    (UnsupportedMediaType, 415),
    (errors.InvalidInput, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.CapacityExhausted, 507),
    (errors.FailedPrecondition, 409),
    (errors.OutOfRange, 413),
    (errors.Unavailable, 503),
    (errors.DataLoss, 500),
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
)
# What the audit trail calls an HTTP answer: the gRPC status name of the same outcome.
_OUTCOMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             406: "INVALID_ARGUMENT", 409: "ALREADY_EXISTS", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
             500: "DATA_LOSS", 503: "UNAVAILABLE", 507: "RESOURCE_EXHAUSTED"}


def http_status(exc: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: BaseException) -> web.Response:
    status = http_status(exc)
    if isinstance(exc, errors.PacsvaultError):
        text = str(exc)
    else:  # a bug: the caller gets an id to quote, the log the traceback
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s", incident, exc_info=exc)
        text = f"internal error {incident}; the daemon log has the details"
    headers = {"WWW-Authenticate": 'Bearer realm="pacsvault"'} if status == 401 else None
    return web.Response(status=status, text=text + "\n", headers=headers)


class CutOff(Exception):
    """A streamed answer failed after its status left: the connection is dropped, so the caller
    sees a body cut short (no closing boundary, no ZIP directory), never a complete-looking one."""


@dataclass
class Call:
    """One admitted HTTP call: its principal, and its audit record's fields."""

    method: str
    principal: Principal
    record: dict[str, object]


class Guard:
    def __init__(self, resolver: PrincipalResolver, trail: AuditTrail | None, executor: Executor,
                 flush_before_read: bool = False) -> None:
        self._resolver, self._trail, self._executor = resolver, trail, executor
        self._flush_before_read = flush_before_read

    async def run(self, principal: Principal | None, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread, as ``principal`` (share scopes narrow it there)."""
        def as_caller() -> T:
            token = current_principal.set(principal)
            try:
                return function(*args)
            finally:
                current_principal.reset(token)
        return await asyncio.get_running_loop().run_in_executor(self._executor, as_caller)

    async def admit(self, request: web.Request, method: str, what: dict[str, object],
                    authorization: str | None = None, pin: str | None = None, door: str = "dicomweb") -> Call:
        """Authenticates and authorises the caller for ``method`` and records the call's start.

        Raises Unauthenticated / PermissionDenied (recorded as refusals), or
        Unavailable when the audit trail cannot take the record (fail closed).
        """
        peer = _peer(request)
        certificate = _certificate(request)
        if authorization is None:
            authorization = request.headers.get("Authorization", "")
        if pin is None:
            pin = request.headers.get("X-Pacsvault-Pin")
        return await self.run(None, self._admit, method, what, authorization, pin, certificate, peer, door)

    async def admit_then(self, request: web.Request, method: str, what: dict[str, object],
                         function: Callable[..., T], *args: Any) -> tuple[Call, T | errors.PacsvaultError]:
        """``admit``, then ``function(*args)`` as the caller, in one trip to a worker thread (each trip
        costs a wake-up of the loop and of a thread: a single instance's latency is a few of them).
        What ``function`` raises is returned, for the caller to record and answer."""
        peer, certificate = _peer(request), _certificate(request)
        authorization = request.headers.get("Authorization", "")
        pin = request.headers.get("X-Pacsvault-Pin")

        def both() -> tuple[Call, T | errors.PacsvaultError]:
            call = self._admit(method, what, authorization, pin, certificate, peer, "dicomweb")
            token = current_principal.set(call.principal)
            try:
                return call, function(*args)
            except errors.PacsvaultError as exc:
                return call, exc
            finally:
                current_principal.reset(token)
        return await asyncio.get_running_loop().run_in_executor(self._executor, both)

    def _admit(self, method: str, what: dict[str, object], authorization: str, pin: str | None,
               certificate: ClientCertificate | None, peer: str, door: str) -> Call:
        name = method.rsplit("/", 1)[-1]
        try:
            if certificate is not None:
                certificate = self._resolver.checked_certificate(certificate)
            principal = self._resolver.resolve_presented(authorization, pin, certificate)
        except errors.PermissionDenied as exc:
            log.warning("refused %s (%s) for %s: %s", name, door, exc.who or "an unidentified caller", exc)
            self._refused(method, exc.who, type(exc) is errors.Unauthenticated, peer, door)
            raise
        if not principal.roles & allowed_roles(method):
            log.warning("refused %s (%s) for principal %s", name, door, principal.id)
            self._refused(method, principal.id, False, peer, door)
            shown = ", ".join(sorted(r.value for r in allowed_roles(method))) or "nobody"
            raise errors.PermissionDenied(f"principal {principal.id} may not call {name} (allowed: {shown})")
        record: dict[str, object] = {"peer": peer, "principal": principal.id,
                                     "roles": sorted(r.value for r in principal.roles), "action": name,
                                     "door": door, **what}
        if principal.break_glass_reason:
            record["break_glass"] = principal.break_glass_reason
            log.warning("BREAK-GLASS %s (%s) by %s", name, door, principal.id)
        if self._trail is not None:
            # As over gRPC (audit.recorder): a store's record is made durable by the index commit.
            durable = self._flush_before_read if method in READ_ONLY else name not in DURABLE_AT_COMMIT
            # Fail closed: nothing is read or changed without its record (Unavailable otherwise).
            self._trail.append_async(record | {"phase": "begin"}, durable=durable).result()
        return Call(method, principal, record)

    def _refused(self, method: str, who: str, unauthenticated: bool, peer: str, door: str) -> None:
        if self._trail is not None:
            self._trail.append_later({"action": method.rsplit("/", 1)[-1], "principal": who, "peer": peer,
                                      "outcome": "UNAUTHENTICATED" if unauthenticated else "PERMISSION_DENIED",
                                      "phase": "refused", "door": door})

    def finish(self, call: Call, outcome: str | int | BaseException, **extra: object) -> None:
        """The call's outcome record (written later: the begin record guarded the call)."""
        if self._trail is None:
            return
        if isinstance(outcome, BaseException):
            outcome = _OUTCOMES.get(http_status(outcome), type(outcome).__name__)
        elif isinstance(outcome, int):
            outcome = "OK" if outcome < 400 else _OUTCOMES.get(outcome, str(outcome))
        self._trail.append_later(call.record | extra | {"phase": "end", "outcome": outcome})


def _peer(request: web.Request) -> str:
    """The caller's address as gRPC writes it (``ipv4:1.2.3.4:5``), which the ATNA export reads."""
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if not peername:
        return ""
    host, port = peername[0], peername[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _certificate(request: web.Request) -> ClientCertificate | None:
    """The client certificate TLS verified against the client CA; None on a plaintext listener."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        return None
    certificate = certificate_from_der(ssl_object.getpeercert(binary_form=True))
    if certificate is None:  # the HTTPS listener requires one: not expected
        raise errors.Unauthenticated("no client certificate")
    return certificate
