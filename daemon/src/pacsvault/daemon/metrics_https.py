"""/metrics over HTTPS with client certificates, for a Prometheus that scrapes from another machine.

With the ``[security]`` TLS files set, the metrics listener follows the API's
rule, on whatever address it listens: TLS 1.2+, a client certificate of the
client CA, not revoked, naming a principal of ``security.principals`` that
holds the ``monitor`` or ``admin`` role; anything else gets 403 (a
certificate of another CA, or none, fails the handshake). Renewed
certificate files are taken up without a restart, as by the API and
DICOMweb. Without TLS files it is plain HTTP, on loopback only.

Prometheus scrapes it with ``scheme: https`` and a ``tls_config`` holding
the CA, its own certificate and key (see ``ansible/README.md``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from pacsvault.daemon.errors import ConfigError, PermissionDenied
from pacsvault.daemon.security.access_table import Role
from pacsvault.daemon.security.principals import PrincipalResolver, certificate_from_der

log = logging.getLogger(__name__)
# Who may read the metrics: the operators' roles that see no patient data.
METRICS_ROLES = frozenset({Role.MONITOR, Role.ADMIN})
HANDSHAKE_TIMEOUT_S = 10.0

# A client certificate as TLS gave it (DER) -> why it is refused, or None to serve it.
Admission = Callable[[bytes | None], str | None]


def admission(resolver: PrincipalResolver) -> Admission:
    """Admits the certificates whose principal holds ``METRICS_ROLES``, checked against revocations."""
    def admit(der: bytes | None) -> str | None:
        try:
            certificate = resolver.checked_certificate(certificate_from_der(der))
            principal = resolver.resolve_presented("", None, certificate)
        except PermissionDenied as exc:  # Unauthenticated too
            return str(exc)
        if not principal.roles & METRICS_ROLES:
            shown = ", ".join(sorted(r.value for r in METRICS_ROLES))
            return f"principal {principal.id} may not read the metrics (allowed: {shown})"
        return None
    return admit


class _Handler(MetricsHandler):
    registry: CollectorRegistry
    admit: Admission
    timeout = HANDSHAKE_TIMEOUT_S  # a client that stalls (handshake or request) is dropped

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()  # here, in this request's thread, not in the accepting one

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        refusal = type(self).admit(self.connection.getpeercert(binary_form=True))
        if refusal is not None:
            log.warning("metrics refused to %s: %s", self.client_address[0], refusal)
            self.send_error(403, "Forbidden", refusal)
            return
        super().do_GET()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, context: ssl.SSLContext) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes (no certificate, another CA, a port scan) are the client's business.
        log.debug("metrics: connection from %s failed", client_address[0], exc_info=True)


def serve_https(registry: CollectorRegistry, host: str, port: int, context: ssl.SSLContext,
                admit: Admission) -> tuple[ThreadingHTTPServer, int]:
    """Starts the HTTPS listener in a daemon thread; returns it and its bound port."""
    handler = type("MetricsOverTls", (_Handler,), {"registry": registry, "admit": staticmethod(admit)})
    try:
        httpd = _Server((host, port), handler, context)
    except OSError as exc:
        raise ConfigError(f"metrics.listen: cannot bind {host}:{port}: {exc.strerror or exc}") from exc
    threading.Thread(target=httpd.serve_forever, name="metrics-https", daemon=True).start()
    return httpd, int(httpd.server_address[1])
