"""Turning a call's transport identity into a principal with roles.

Identity comes from the client certificate's SAN URI
(``spiffe://pacsvault/<kind>/<name>``; the CN is never trusted), checked by
TLS against the configured client CA. A plaintext call can only arrive on a
loopback listener (the daemon refuses plaintext anywhere else) and is the
local principal with the configured loopback roles.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from pacsvault.daemon.security.access_table import Role

LOOPBACK_PRINCIPAL = "local:loopback"


@dataclass(frozen=True)
class Principal:
    """A caller: a stable, unique id that logs and audit records carry, and its roles."""

    id: str
    roles: frozenset[Role]


class PrincipalResolver:
    def __init__(self, by_identity: dict[str, frozenset[Role]], loopback_roles: frozenset[Role]) -> None:
        self._by_identity = by_identity
        self._loopback = Principal(LOOPBACK_PRINCIPAL, loopback_roles)

    def resolve(self, context: grpc.ServicerContext) -> Principal | None:
        """The caller's principal; None when it presented an identity we do not know."""
        auth = context.auth_context()
        if auth.get("transport_security_type", [b""])[0] != b"ssl":
            return self._loopback
        for identity in auth.get("peer_spiffe_id", []):
            roles = self._by_identity.get(identity.decode(errors="replace"))
            if roles is not None:
                return Principal(identity.decode(), roles)
        return None
