"""Who is calling through the DIMSE door, what they may do, and the audit record of each request.

A connection is let in on the same terms as the gRPC API. Without TLS the
listener is on loopback (the config refuses anything else) and any calling
AE is the local principal with ``security.loopback_roles``. With TLS the
client certificate names the principal exactly as ``security.principals``
does for gRPC, and the calling AE title must be one ``dicom.calling_aes``
gives to that principal; anything else is refused at the A-ASSOCIATE-RQ
(calling AE title not recognised) and recorded.

Every request is then the gRPC method it corresponds to (C-STORE is
StoreInstance, C-FIND Find, C-MOVE / C-GET GetStudy / GetSeries /
GetInstance, ...): the access table decides, the principal is resolved
again (a certificate revoked meanwhile is refused at the next request), and
the audit trail gets the same records ``audit.recorder.AuditInterceptor``
writes: a begin record (durable before a change is made; written before
the first byte of a read leaves), an end record with the outcome named as
gRPC names it, and refusals.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import PermissionDenied, Unauthenticated, Unavailable
from pacsvault.daemon.security.access_table import allowed_roles
from pacsvault.daemon.security.principals import Principal, PrincipalResolver
from pacsvault.daemon.security.scope import current_principal
from pacsvault.daemon.service.status import code_for

log = logging.getLogger("pacsvault.access")

ARCHIVE = "/pacsvault.v1.ArchiveService/"
# C-ECHO reveals nothing: whoever may check the API's health may echo.
ECHO = "/grpc.health.v1.Health/Check"
# The action of a refused association (no request was made yet).
ASSOCIATION = "DicomAssociation"
# A-ASSOCIATE-RJ: rejected permanent / transient, by the service user; no reason given / calling AE title
# not recognised.
_REJECT_PERMANENT, _REJECT_TRANSIENT, _SERVICE_USER, _NO_REASON, _CALLING_AE_UNKNOWN = 0x01, 0x02, 0x01, 0x01, 0x03


@dataclass(frozen=True)
class Connection:
    """What an association was let in on: the calling AE, the peer, the certificate (None: plaintext)."""

    calling_ae: str
    peer: str
    certificate_pem: bytes | None


@dataclass
class Call:
    """One request being served: its caller and its begin record."""

    principal: Principal
    base: dict[str, object]
    begin: Future[int] | None
    extra: dict[str, object] = field(default_factory=dict)

    def released(self) -> None:
        """Waits until the begin record is written (durable when required): before anything leaves."""
        if self.begin is not None and "begin" not in self.base:
            self.base["begin"] = self.begin.result()


class Guard:
    def __init__(self, config: Config, resolver: PrincipalResolver, trail: AuditTrail | None) -> None:
        self._titles = {c.ae_title: c.identity for c in config.dicom.calling_aes}
        self._resolver, self._trail = resolver, trail
        self._flush_before_read = config.audit.flush_before_read
        self._connections: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()

    # -- the association ------------------------------------------------------------

    def on_requested(self, event: Any) -> None:
        """EVT_REQUESTED: lets the association go on to negotiation, or rejects it."""
        assoc = event.assoc
        calling_ae = str(assoc.requestor.primitive.calling_ae_title or "").strip()
        connection = Connection(calling_ae, peer_of(assoc), _peer_certificate(assoc))
        try:
            principal = self._resolver.resolve_certificate(connection.certificate_pem)
            if connection.certificate_pem is not None and self._titles.get(calling_ae) != principal.id:
                raise _UnknownCallingAe(f"calling AE title {calling_ae!r} is not one dicom.calling_aes gives to "
                                        f"{principal.id}", who=principal.id)
        except PermissionDenied as exc:
            outcome = "UNAUTHENTICATED" if isinstance(exc, Unauthenticated) else "PERMISSION_DENIED"
            log.warning("DICOM association from %s (calling AE %r) refused: %s", connection.peer, calling_ae, exc)
            self.refused(ASSOCIATION, exc.who or "unidentified", outcome, connection, {})
            reason = _CALLING_AE_UNKNOWN if isinstance(exc, _UnknownCallingAe) else _NO_REASON
            assoc.acse.send_reject(_REJECT_PERMANENT, _SERVICE_USER, reason)
            assoc.kill()
            return
        except Exception:  # noqa: BLE001 - cannot tell who it is (the index unreadable?): fail closed
            log.exception("DICOM association from %s refused: its caller could not be checked", connection.peer)
            assoc.acse.send_reject(_REJECT_TRANSIENT, _SERVICE_USER, _NO_REASON)
            assoc.kill()
            return
        self._connections[assoc] = connection
        log.info("DICOM association from %s, calling AE %r, as %s", connection.peer, calling_ae, principal.id)

    def connection(self, assoc: Any) -> Connection:
        return self._connections[assoc]

    # -- each request ---------------------------------------------------------------

    def authorize(self, assoc: Any, method: str) -> Principal:
        """The caller, when it may call ``method``; for requests that reveal nothing (not audited, like
        the API's health checks)."""
        return self._principal(self._connections[assoc], method, method.rsplit("/", 1)[-1])

    @contextlib.contextmanager
    def call(self, assoc: Any, method: str, what: dict[str, object], changes: bool,
             action: str = "") -> Iterator[Call]:
        """Authorises ``method`` for the caller, records it, and runs the body as that principal.

        Raises PermissionDenied when the caller may not; Unavailable when the audit trail
        cannot take the record (nothing is done then). A change waits for its begin record
        on stable storage before the body runs; a read calls ``Call.released`` before
        the first byte of its answer leaves.
        """
        connection = self._connections[assoc]
        action = action or method.rsplit("/", 1)[-1]
        principal = self._principal(connection, method, method.rsplit("/", 1)[-1])
        base = _who(principal, connection) | {"action": action} | what
        begin = None
        if self._trail is not None:
            durable = changes or self._flush_before_read
            begin = self._trail.append_async(base | {"phase": "begin"}, durable=durable)
        call = Call(principal, base, begin)
        if changes:
            call.released()
        token = current_principal.set(principal)
        outcome = "OK"
        try:
            yield call
        except GeneratorExit:
            outcome = "CANCELLED"  # the association went before the answer was complete
            raise
        except Exception as exc:
            outcome = code_for(exc).name  # type: ignore[arg-type]  # INTERNAL for anything unexpected
            raise
        finally:
            try:
                current_principal.reset(token)
            except ValueError:
                current_principal.set(None)  # a generator closed from another context
            if self._trail is not None:
                with contextlib.suppress(Unavailable):
                    self._trail.append_later(base | call.extra | {"phase": "end",
                                                                  "outcome": call.extra.pop("outcome", outcome)})

    def _principal(self, connection: Connection, method: str, action: str) -> Principal:
        try:
            principal = self._resolver.resolve_certificate(connection.certificate_pem)
        except PermissionDenied as exc:
            outcome = "UNAUTHENTICATED" if isinstance(exc, Unauthenticated) else "PERMISSION_DENIED"
            self.refused(method, exc.who, outcome, connection, {})
            raise
        needed = allowed_roles(method)
        if not principal.roles & needed:
            self.refused(method, principal.id, "PERMISSION_DENIED", connection, {})
            shown = ", ".join(sorted(r.value for r in needed)) or "nobody"
            raise PermissionDenied(f"{principal.id} may not {action} (allowed: {shown})", who=principal.id)
        if principal.break_glass_reason:
            log.warning("BREAK-GLASS %s by %s over DICOM (reason of %d characters in the audit trail)", action,
                        principal.id, len(principal.break_glass_reason))
        return principal

    def refused(self, method: str, who: str, outcome: str, connection: Connection,
                what: dict[str, object]) -> None:
        if self._trail is None:
            return
        self._trail.append_later({"action": method.rsplit("/", 1)[-1], "principal": who, "peer": connection.peer,
                                  "outcome": outcome, "phase": "refused", "door": "dimse",
                                  "calling_ae": connection.calling_ae} | what)


class _UnknownCallingAe(PermissionDenied):
    """The certificate is fine, but the calling AE title is not its principal's."""


def _who(principal: Principal, connection: Connection) -> dict[str, object]:
    who: dict[str, object] = {"peer": connection.peer, "principal": principal.id,
                              "roles": sorted(r.value for r in principal.roles),
                              "door": "dimse", "calling_ae": connection.calling_ae}
    if principal.break_glass_reason:
        who["break_glass"] = principal.break_glass_reason
    return who


def peer_of(assoc: Any) -> str:
    """The peer as gRPC names one (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), which the ATNA export reads."""
    address, port = assoc.requestor.address, assoc.requestor.port
    return f"ipv6:[{address}]:{port}" if ":" in str(address) else f"ipv4:{address}:{port}"


def _peer_certificate(assoc: Any) -> bytes | None:
    sock = getattr(assoc.dul.socket, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der).encode() if der else b""
