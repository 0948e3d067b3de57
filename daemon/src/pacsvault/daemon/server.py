"""Builds a serving process's gRPC server: the API services, standard health and reflection.

Every serving process binds the same port (SO_REUSEPORT: the kernel spreads
connections over them); the supervisor reserved the port beforehand, so no
other program can join it. The back office's internal listener is built here
too, on a unix socket, for the methods serving processes forward to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pacsvault.daemon.audit.recorder import AuditInterceptor
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.config import Config, listen_is_loopback
from pacsvault.daemon.errors import ConfigError
from pacsvault.daemon.security.access_table import parse_roles
from pacsvault.daemon.security.authorization import AuthorizationInterceptor
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.security.principals import PrincipalResolver
from pacsvault.daemon.service.call_limits import CallLimitsInterceptor
from pacsvault.daemon.service.draining import DrainingInterceptor
from pacsvault.daemon.service.request_decoding import RequestDecodingInterceptor
from pacsvault.v1 import (
    appliance_pb2,
    audit_pb2,
    archive_pb2,
    replication_pb2,
    security_pb2,
    storage_pb2,
)

# (the generated add_<Service>Servicer_to_server function, the servicer)
Registration = tuple[Callable[[Any, grpc.Server], None], Any]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    archive_pb2.DESCRIPTOR.services_by_name["ArchiveService"].full_name,
    appliance_pb2.DESCRIPTOR.services_by_name["ApplianceService"].full_name,
    storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name,
    replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"].full_name,
    security_pb2.DESCRIPTOR.services_by_name["SecurityService"].full_name,
    security_pb2.DESCRIPTOR.services_by_name["ShareService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


# Still SERVING while no volume takes new data: reads and the health RPCs work.
_SERVING_WHEN_FULL = frozenset({appliance_pb2.DESCRIPTOR.services_by_name["ApplianceService"].full_name})


@dataclass
class Served:
    """What create_server built: the server, its port, and the handles to run it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    calls: DrainingInterceptor
    serving: bool = False
    # Whether any tier volume takes new data (the health monitor says).
    writable: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_serving(self, serving: bool) -> None:
        with self._lock:
            self.serving = serving
            self._publish()

    def set_writable(self, writable: bool) -> None:
        """NOT_SERVING for "" and the archive while no volume can take new data."""
        with self._lock:
            if writable != self.writable:  # Watch streams hear of changes only
                self.writable = writable
                self._publish()

    def _publish(self) -> None:
        for name in ("", *SERVICE_NAMES):
            up = self.serving and (self.writable or name in _SERVING_WHEN_FULL)
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING if up
                            else health_pb2.HealthCheckResponse.NOT_SERVING)

    def shutdown(self, grace_s: float) -> None:
        """Health first, so load balancers stop sending work; then drain; then stop."""
        self.set_serving(False)
        left = self.calls.drain(grace_s)
        if left:
            log.warning("%d calls still running after %.0fs; cancelling them", left, grace_s)
        self.server.stop(1.0).wait()


def create_server(config: Config, services: Sequence[Registration], credentials: CredentialStore,
                  audit: AuditTrail | None, interceptors: Sequence[grpc.ServerInterceptor] = (),
                  share_port: bool = False) -> Served:
    """A server bound to ``config.server.listen`` (port 0 picks one); not started.

    ``share_port``: bind with SO_REUSEPORT, beside the daemon's other serving
    processes (the supervisor holds the port reserved). Health answers
    NOT_SERVING until the caller starts the server and calls
    ``set_serving(True)``. ``interceptors`` (e.g. RPC metrics) run outside
    the draining one, so they also see the calls refused at shutdown.
    """
    if not config.security.tls and not listen_is_loopback(config.server.listen):
        # Patient data never crosses a network in clear text.
        raise ConfigError(
            f"server.listen {config.server.listen!r} is off loopback: set security.tls_cert_file, "
            "security.tls_key_file and security.client_ca_file"
        )
    limit = config.server.max_message_bytes
    calls = DrainingInterceptor()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.server.max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Shared with the daemon's other serving processes only: the supervisor reserved the
            # port (without SO_REUSEPORT nobody else can bind it, and another pacsvaultd checks first).
            ("grpc.so_reuseport", 1 if share_port else 0),
            # Bounded connection age: clients re-handshake, so renewed or
            # revoked certificates take effect on every connection in time.
            ("grpc.max_connection_age_ms", int(config.security.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
        maximum_concurrent_rpcs=config.server.max_workers * 4,
        interceptors=[RequestDecodingInterceptor(), *interceptors, *_access_interceptors(config, audit, credentials),
                      calls],
    )
    for add, servicer in services:
        add(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = _bind(server, config)
    except RuntimeError as exc:
        raise ConfigError(f"server.listen: cannot bind {config.server.listen}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"server.listen: cannot bind {config.server.listen} (in use?)")
    return Served(server, port, health_servicer, calls)


def _access_interceptors(config: Config, trail: AuditTrail | None,
                         credentials: CredentialStore) -> list[grpc.ServerInterceptor]:
    """Authorization first (it names the caller), then the caller's limits (refused cheaply, before
    any record), then the audit record of what it does."""
    resolver = principal_resolver(config, credentials)
    limits = CallLimitsInterceptor(config.limits)
    if trail is None:
        return [AuthorizationInterceptor(resolver), limits]
    audit = AuditInterceptor(trail, flush_before_read=config.audit.flush_before_read)
    return [AuthorizationInterceptor(resolver, audit.record_refusal), limits, audit]


def create_internal_server(socket_path: Path, services: Sequence[Registration], threads: int = 16) -> grpc.Server:
    """The back office's listener for what serving processes forward (not started).

    A unix socket in the daemon's run folder (mode 0700): only the daemon's
    own user can connect, so callers were authenticated, authorised and
    audited by the serving process that forwards.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="internal"), options=[
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ])
    for add, servicer in services:
        add(servicer, server)
    socket_path.unlink(missing_ok=True)
    if server.add_insecure_port(f"unix:{socket_path}") == 0:
        raise ConfigError(f"cannot listen on {socket_path}")
    return server


def principal_resolver(config: Config, credentials: CredentialStore) -> PrincipalResolver:
    sec = config.security
    return PrincipalResolver(
        {p.identity: parse_roles(p.roles, "security.principals") for p in sec.principals},
        parse_roles(sec.loopback_roles, "security.loopback_roles"),
        credentials, parse_roles(sec.break_glass_roles, "security.break_glass_roles"),
    )


def _bind(server: grpc.Server, config: Config) -> int:
    sec = config.security
    if not sec.tls:
        return server.add_insecure_port(config.server.listen)
    # grpcio negotiates TLS 1.2 or 1.3 only; a client certificate from the CA is required.
    reloader = CertificateReloader([config.resolve(p) for p in (sec.tls_key_file, sec.tls_cert_file,
                                                                 sec.client_ca_file)])
    credentials = grpc.dynamic_ssl_server_credentials(reloader.initial(), reloader.fetch,
                                                      require_client_authentication=True)
    return server.add_secure_port(config.server.listen, credentials)


class CertificateReloader:
    """Serves the newest key, certificate and client CA without a restart.

    grpcio asks before every handshake; files that changed since the last
    answer are read again (all three, so a half-written renewal is retried
    on the next handshake rather than served). Connections older than
    security.max_connection_age_s are closed, so even long-lived clients
    re-handshake against the new files within that bound.
    """

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._seen = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in self._paths)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        key, cert, ca = (p.read_bytes() for p in self._paths)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._configuration()

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return None
            configuration = self._configuration()
        except OSError:
            return None  # mid-renewal: keep serving the previous files
        self._seen = stamp
        log.info("TLS certificate files changed: new handshakes use them")
        return configuration
