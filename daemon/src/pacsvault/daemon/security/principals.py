"""Turning a call's credentials into a principal with roles (and, for shares, a scope).

Identity comes from the client certificate (verified by TLS against the
configured client CA and checked against the daemon's own revocation list,
by every URI it carries and by its serial): a certificate names a principal
only when its one and only URI SAN is a SPIFFE ID
(``spiffe://pacsvault/<kind>/<name>``); the CN is never trusted. A
plaintext call can only arrive on a loopback listener (the daemon refuses
plaintext anywhere else) and is the local principal.

A bearer token in ``authorization: Bearer ...`` is either an access token,
worth something only together with the certificate of the principal it was
issued to (or on loopback), or a share grant: whatever certificate comes with
it, the caller then reaches the share's study or patient and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import grpc
from cryptography import x509

from pacsvault.daemon.errors import PermissionDenied, Unauthenticated
from pacsvault.daemon.security.access_table import Role
from pacsvault.daemon.security.credentials import CredentialStore, holder, token_hash
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
    # What the call was admitted on, so a long answer can check it still holds.
    credential_key: bytes = b""  # the token hash of the access token or share, if one was used
    certificate: ClientCertificate | None = None


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
        return self.resolve_presented(metadata.get("authorization", ""), metadata.get("x-pacsvault-pin"),
                                      self._certificate(context))

    def resolve_presented(self, authorization: str, pin: str | None,
                          certificate: ClientCertificate | None) -> Principal:
        """The principal of what a caller presented, whatever the door (gRPC, DICOMweb):
        ``certificate`` as ``checked_certificate`` gave it, None on a plaintext loopback listener."""
        if authorization:
            principal = self._token_principal(authorization, pin, certificate)
        elif certificate is None:
            principal = self._loopback
        else:
            principal = self._certificate_principal(certificate)
        return self._with_break_glass(dataclasses.replace(principal, certificate=certificate))

    def _certificate(self, context: grpc.ServicerContext) -> ClientCertificate | None:
        """The verified, unrevoked client certificate; None on a plaintext (loopback) listener."""
        return unrevoked_certificate(context, self._credentials)

    def checked_certificate(self, certificate: ClientCertificate | None) -> ClientCertificate:
        """A certificate TLS verified, refused when it is on the daemon's revocation list."""
        return checked_certificate(certificate, self._credentials)

    def resolve_certificate(self, pem: bytes | None) -> Principal:
        """The principal of a connection that carries no token (the DIMSE door): the holder of the
        client certificate TLS verified (PEM), by the same rules as a gRPC call; None is a plaintext
        connection, which only a loopback listener takes: the local principal."""
        certificate = None if pem is None else self.checked_certificate(_parsed(pem))
        return self.resolve_presented("", None, certificate)

    def _certificate_principal(self, certificate: ClientCertificate) -> Principal:
        roles = self._by_identity.get(certificate.identity) if certificate.identity else None
        if roles is None:
            raise PermissionDenied("your certificate is valid but names no principal configured on this appliance"
                                   " (it needs exactly one SAN URI, spiffe://pacsvault/client/<name>)",
                                   who=certificate.described)
        return Principal(certificate.identity, roles)

    def _token_principal(self, header: str, pin: str | None, certificate: ClientCertificate | None) -> Principal:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        who = certificate.described if certificate is not None else LOOPBACK_PRINCIPAL
        if scheme.lower() != "bearer" or not token or self._credentials is None:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'", who=who)
        try:
            record = self._credentials.authenticate(token, pin)
        except Unauthenticated as exc:
            if certificate is None or not certificate.identity:
                raise  # named by the token: its principal, share:<id> or token:<id>
            # TLS authenticated who is calling; the token is only what they claimed.
            raise Unauthenticated(str(exc), who=certificate.identity, locked_out=exc.locked_out) from exc
        if record.kind == "share":
            # The share's scope is all it gives, whatever certificate carries it.
            scope = Scope(record.study_instance_uid, bytes(record.patient_key))
            return Principal(holder(record), frozenset({Role.SHARE}), scope, credential_key=token_hash(token))
        if certificate is not None and certificate.identity != record.principal:
            raise Unauthenticated("this token is bound to another identity than your certificate's"
                                  if certificate.identity else "an access token needs the certificate of its "
                                  "principal; yours names none, so only a share token is accepted with it", who=who)
        roles = self._by_identity.get(record.principal)
        if roles is None:
            raise PermissionDenied(f"token of {record.principal}, which is no longer a configured principal",
                                   who=record.principal)
        return Principal(record.principal, roles, credential_key=token_hash(token))

    def _with_break_glass(self, principal: Principal) -> Principal:
        if self._credentials is None or principal.scope is not None:
            return principal
        grant = self._credentials.active_break_glass(principal.id)
        if grant is None:
            return principal
        return dataclasses.replace(principal, roles=principal.roles | self._break_glass_roles,
                                   break_glass_reason=grant.reason)


@dataclass(frozen=True)
class ClientCertificate:
    """What a client certificate verified by TLS says about its holder."""

    uris: tuple[str, ...]  # every URI SAN, in order
    serial: str  # canonical hex (serials.serial_of)

    @property
    def identity(self) -> str:
        """The one principal it names: its only URI SAN, when that is a SPIFFE ID; '' otherwise."""
        if len(self.uris) == 1 and self.uris[0].startswith("spiffe://"):
            return self.uris[0]
        return ""

    @property
    def described(self) -> str:
        """How logs and refusal records name the holder."""
        return self.identity or f"certificate:{self.serial}"


def unrevoked_certificate(context: grpc.ServicerContext,
                          credentials: CredentialStore | None) -> ClientCertificate | None:
    """The client certificate TLS verified, checked against the revocation list; None without TLS.

    Unauthenticated when it is revoked (by any URI it carries, or by serial).
    The API and the peer listener both ask this.
    """
    auth = context.auth_context()
    if auth.get("transport_security_type", [b""])[0] != b"ssl":
        return None
    return checked_certificate(_parsed(auth.get("x509_pem_cert", [b""])[0]), credentials)


def checked_certificate(certificate: ClientCertificate | None,
                        credentials: CredentialStore | None) -> ClientCertificate:
    """A certificate TLS verified (whichever door), refused when it is on the revocation list."""
    if certificate is None:  # the TLS listeners require a certificate: not expected
        raise Unauthenticated("no client certificate")
    if credentials is not None and credentials.certificate_revoked(certificate.uris, certificate.serial):
        raise Unauthenticated(f"certificate of {certificate.described} is revoked", who=certificate.described)
    return certificate


@functools.lru_cache(maxsize=1024)
def _parsed(pem: bytes) -> ClientCertificate | None:
    if not pem:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return _described(cert)


@functools.lru_cache(maxsize=1024)
def certificate_from_der(der: bytes | None) -> ClientCertificate | None:
    """What a DER certificate (as Python's ssl gives a verified peer's) says about its holder."""
    if not der:
        return None
    try:
        return _described(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def _described(cert: x509.Certificate) -> ClientCertificate:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(names.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return ClientCertificate(uris, serial_of(cert.serial_number))
