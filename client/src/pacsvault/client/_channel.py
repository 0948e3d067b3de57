"""Channels to an appliance: address, TLS, credentials metadata and the retry policy.

Shared by the blocking and the asyncio client so both connect, authenticate
and retry alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

DEFAULT_SERVER = "127.0.0.1:50051"
# Connections the blocking client spreads the archive's calls over (see PacsvaultClient).
DEFAULT_CONNECTIONS = 8
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
HEALTH_CHECK = "/grpc.health.v1.Health/Check"  # called by name: the health stubs are untyped

# Calls that only read: sending one again changes nothing, so gRPC may retry
# them on UNAVAILABLE (a daemon restarting, a connection refused). Writes are
# never retried by the channel: the caller decides (a store sent again is
# answered DUPLICATE, so retrying one is safe too, but it is the caller's call).
IDEMPOTENT_READS: dict[str, tuple[str, ...]] = {
    "pacsvault.v1.ArchiveService": ("Find", "ListPatientStudies", "GetInstance", "ReadInstance", "GetSeries",
                                    "GetStudy", "GetStudyMetadata"),
    "pacsvault.v1.ApplianceService": ("GetApplianceHealth", "WatchHealth"),
    "pacsvault.v1.StorageService": ("ListVolumes", "PlanMoves"),
    "pacsvault.v1.ReplicationService": ("GetReplicationStatus",),
    "pacsvault.v1.SecurityService": ("ListTokens", "GetEncryptionStatus"),
    "pacsvault.v1.ShareService": ("ListShares",),
    "pacsvault.v1.AuditService": ("VerifyAudit", "QueryAudit"),
    "grpc.health.v1.Health": ("Check",),
}


def default_server() -> str:
    """``$PACSVAULT_SERVER``, else the loopback default."""
    return os.environ.get("PACSVAULT_SERVER") or DEFAULT_SERVER


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retry (a service config) for the idempotent reads, on UNAVAILABLE only.

    Attempt n waits ``initial_backoff_s * multiplier**(n-1)`` (at most
    ``max_backoff_s``, +-20 % jitter): by default 0.5, 1, 2 and 4 s, so a read
    rides out about 6 to 9 s of a daemon restarting or not yet listening.
    gRPC caps attempts at 5. A streamed read is retried only until its first
    message arrived.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 4.0
    multiplier: float = 2.0

    def service_config(self) -> str:
        names = [{"service": service, "method": method}
                 for service, methods in IDEMPOTENT_READS.items() for method in methods]
        return json.dumps({"methodConfig": [{
            "name": names,
            "retryPolicy": {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff_s}s",
                "maxBackoff": f"{self.max_backoff_s}s",
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]})


DEFAULT_RETRY = RetryPolicy()


def channel_options(retry: RetryPolicy | None) -> list[tuple[str, str | int]]:
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if retry is None:
        return [*options, ("grpc.enable_retries", 0)]
    # Reconnect soon after a refused connection (gRPC's default waits 1 s, then
    # longer), so a retried read finds a daemon that came back within the window.
    return [*options, ("grpc.enable_retries", 1), ("grpc.service_config", retry.service_config()),
            ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect; ``None`` fields fall back to the environment."""

    target: str
    tls: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]
    options: list[tuple[str, str | int]]

    @classmethod
    def resolve(cls, target: str | None, *, ca_file: str | None, cert_file: str | None, key_file: str | None,
                token: str | None, pin: str | None, retry: RetryPolicy | None) -> Connection:
        """Plaintext to a loopback appliance; mutual TLS when a CA file is given (or
        ``$PACSVAULT_CA_FILE``, with ``$PACSVAULT_CERT_FILE`` / ``$PACSVAULT_KEY_FILE``);
        ``token`` (or ``$PACSVAULT_TOKEN``) as a bearer token, ``pin`` with a share token."""
        ca_file = ca_file or os.environ.get("PACSVAULT_CA_FILE")
        tls = None
        if ca_file:
            cert_file = cert_file or os.environ.get("PACSVAULT_CERT_FILE")
            key_file = key_file or os.environ.get("PACSVAULT_KEY_FILE")
            tls = grpc.ssl_channel_credentials(
                Path(ca_file).read_bytes(),
                Path(key_file).read_bytes() if key_file else None,
                Path(cert_file).read_bytes() if cert_file else None,
            )
        token = token or os.environ.get("PACSVAULT_TOKEN")
        metadata: tuple[tuple[str, str], ...] = ()
        if token:
            metadata = (("authorization", f"Bearer {token}"),) + ((("x-pacsvault-pin", pin),) if pin else ())
        return cls(target or default_server(), tls, metadata, channel_options(retry))

    def channel(self, *, own_connection: bool = False) -> grpc.Channel:
        """``own_connection``: a TCP connection of its own, not shared with the process's other channels."""
        options = [*self.options, ("grpc.use_local_subchannel_pool", 1)] if own_connection else self.options
        if self.tls is None:
            return grpc.insecure_channel(self.target, options=options)
        return grpc.secure_channel(self.target, self.tls, options=options)

    def aio_channel(self, *, own_connection: bool = False) -> grpc.aio.Channel:
        options = [*self.options, ("grpc.use_local_subchannel_pool", 1)] if own_connection else self.options
        if self.tls is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        return grpc.aio.secure_channel(self.target, self.tls, options=options)
