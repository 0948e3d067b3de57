"""Turning a call's credentials into a principal with roles (and, for shares, a scope).

Identity comes from the client certificate's SAN URI
(``spiffe://pacsvault/<kind>/<name>``; the CN is never trusted), checked by
TLS against the configured client CA and against the daemon's own
revocation list. A plaintext call can only arrive on a loopback listener
(the daemon refuses plaintext anywhere else) and is the local principal.
A bearer token in ``authorization: Bearer ...`` either stands for the
principal it is bound to (and must agree with the certificate, if any) or is
a share grant, which narrows the caller to one study or one patient.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import grpc
from cryptography import x509

from pacsvault.daemon.errors import PermissionDenied
from pacsvault.daemon.security.access_table import Role
from pacsvault.daemon.security.credentials import CredentialStore, Unauthenticated
from pacsvault.daemon.security.serials import serial_of

LOOPBACK_PRINCIPAL = "local:loopback"


@dataclass(frozen=True)
class Scope:
    """What a share grant reaches: one study, or every study of one patient."""

    study_instance_uid: str = ""
    patient_key: bytes = b""


@dataclass(frozen=True)
class Principal:
    """A caller: a stable, unique id that logs and audit records carry, and its roles."""

    id: str
    roles: frozenset[Role]
    scope: Scope | None = None
    break_glass_reason: str = ""


class PrincipalResolver:
    def __init__(self, by_identity: dict[str, frozenset[Role]], loopback_roles: frozenset[Role],
                 credentials: CredentialStore | None = None, break_glass_roles: frozenset[Role] = frozenset()) -> None:
        self._by_identity = by_identity
        self._loopback = Principal(LOOPBACK_PRINCIPAL, loopback_roles)
        self._credentials = credentials
        self._break_glass_roles = break_glass_roles

    def resolve(self, context: grpc.ServicerContext) -> Principal:
        """The caller's principal; Unauthenticated / PermissionDenied say why there is none."""
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        transport = self._transport_principal(context)
        token = metadata.get("authorization", "")
        if token:
            principal = self._token_principal(token, metadata.get("x-pacsvault-pin"), transport)
        elif transport is None:
            raise Unauthenticated("no credentials: present a client certificate or a token")
        else:
            principal = transport
        return self._with_break_glass(principal)

    def _transport_principal(self, context: grpc.ServicerContext) -> Principal | None:
        auth = context.auth_context()
        if auth.get("transport_security_type", [b""])[0] != b"ssl":
            return self._loopback
        identities = [i.decode(errors="replace") for i in auth.get("peer_spiffe_id", [])]
        if not identities:
            return None
        pem = auth.get("x509_pem_cert", [b""])[0]
        serial = _serial_hex(pem) if pem else ""
        for identity in identities:
            if self._credentials is not None and self._credentials.certificate_revoked([identity], serial):
                raise Unauthenticated(f"certificate of {identity} is revoked")
            roles = self._by_identity.get(identity)
            if roles is not None:
                return Principal(identity, roles)
        raise PermissionDenied("your certificate is valid but names no principal configured on this appliance")

    def _token_principal(self, header: str, pin: str | None, transport: Principal | None) -> Principal:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or self._credentials is None:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        record = self._credentials.authenticate(token.strip(), pin)
        if record.kind == "share":
            scope = Scope(record.study_instance_uid, bytes(record.patient_key))
            return Principal(f"share:{record.credential_id}", frozenset({Role.SHARE}), scope)
        if transport is not None and transport.id not in (record.principal, LOOPBACK_PRINCIPAL):
            raise Unauthenticated("this token is bound to another identity than your certificate's")
        roles = self._by_identity.get(record.principal)
        if roles is None:
            raise PermissionDenied(f"token of {record.principal}, which is no longer a configured principal")
        return Principal(record.principal, roles)

    def _with_break_glass(self, principal: Principal) -> Principal:
        if self._credentials is None or principal.scope is not None:
            return principal
        grant = self._credentials.active_break_glass(principal.id)
        if grant is None:
            return principal
        return Principal(principal.id, principal.roles | self._break_glass_roles, None, grant.reason)


@functools.lru_cache(maxsize=1024)
def _serial_hex(pem: bytes) -> str:
    try:
        return serial_of(x509.load_pem_x509_certificate(pem).serial_number)
    except ValueError:
        return ""
