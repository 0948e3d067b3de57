"""Site replication as the back office runs it: the peer listener, the sender and
its backoff, the scrub of the shards kept for the peer, and status.

Serving processes queue work in the outbox (in the same transaction as the
change) and ring a doorbell; repair of a local blob from the peer happens in
the serving process that found it bad (``PeerClient.fetch_verified``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc

from pacsvault.daemon.audit.alerts import AlertSink
from pacsvault.daemon.audit.witness import AuditWitness
from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import ConfigError
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord
from pacsvault.daemon.index import outbox, peer_lost, replicas
from pacsvault.daemon.replication.codec import ErasureCodec
from pacsvault.daemon.replication.liveness import PeerWatch
from pacsvault.daemon.replication.lost import resend_lost
from pacsvault.daemon.replication.peer_client import PeerClient
from pacsvault.daemon.replication.peer_service import PeerServicer
from pacsvault.daemon.replication.scrub import ShardScrubber
from pacsvault.daemon.replication.sender import ReplicationSender
from pacsvault.daemon.replication.shard_store import ShardStore
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.storage.blob_access import BlobReader
from pacsvault.daemon.tiering.mover import RateLimiter
from pacsvault.v1 import peer_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicationStatus:
    enabled: bool
    appliance: str
    peer: str
    peer_address: str
    state: str
    pending_entries: int
    pending_bytes: int
    oldest_pending_age_s: float
    bytes_per_second: float
    blobs_replicated: int
    bytes_replicated: int
    last_error: str
    rpo_warning_s: float
    repairs: int
    # Replicas the peer reported it cannot rebuild (being re-sent), and seconds since it last answered.
    peer_lost: int = 0
    last_answer_age_s: float = -1.0


class ReplicationManager:
    def __init__(self, config: Config, env: IndexEnvironment, open_stored: Callable[[BlobRecord], BlobReader],
                 peer: PeerClient, wait_for_work: Callable[[float], object],
                 clock: Callable[[], float] = time.time, alerts: AlertSink | None = None) -> None:
        """``wait_for_work(timeout)`` returns early when a serving process rang the doorbell;
        ``alerts`` hears of what the peer listener refuses."""
        self.config, self.env, self.clock = config, env, clock
        self.alerts = alerts or AlertSink(None)
        r = config.replication
        self.codec = ErasureCodec(r.data_shards, r.parity_shards)
        self.peer = peer
        self._wait_for_work = wait_for_work
        self.sender = ReplicationSender(env, open_stored, self.codec, self.peer, RateLimiter(r.max_bytes_per_s))
        # The peer's shards go on this appliance's own last disks (an object-store tier holds our blobs only).
        last_local = next(t for t in reversed(config.tiers) if not t.is_object_store)
        shard_volumes = [config.resolve(path) / "replica" for path in last_local.volumes]
        self.shards = ShardStore(shard_volumes, clock)
        self.scrubber = ShardScrubber(self.shards, clock=clock, rate_limit_bytes_per_s=r.scrub_max_bytes_per_s,
                                      cursor_path=config.resolve(config.index.path) / "scrub-cursor.json")
        self.watch = PeerWatch(peer.list_lost_replicas, r.probe_interval_s, r.probe_timeout_s,
                               on_answer=lambda lost: resend_lost(env, lost, clock()))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replication", daemon=True)
        self.server: grpc.Server | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.server, self.port = self._peer_server()
        self.server.start()
        log.info("peer listener (mutual TLS) on %s; replicating to %s at %s", self._listen_host_port(),
                 self.config.replication.peer_name, self.config.replication.peer_address)
        self._thread.start()
        self.watch.start()

    def stop(self) -> None:
        """Stops the sender (its wait ends within one sender interval) and the peer listener."""
        self._stop.set()
        self.watch.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        if self.server is not None:
            self.server.stop(5).wait()

    def _peer_server(self) -> tuple[grpc.Server, int]:
        r = self.config.replication
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="peer"), options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ])
        witness = AuditWitness(self.env, self.alerts, self.clock)
        servicer = PeerServicer(self.shards, self.env, r.peer_name, witness, CredentialStore(self.env, self.clock),
                                self.alerts)
        peer_pb2_grpc.add_PeerServiceServicer_to_server(servicer, server)
        key, cert, ca = (self.config.resolve(p).read_bytes() for p in (r.key_file, r.cert_file, r.ca_file))
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        port = server.add_secure_port(r.listen, credentials)
        if port == 0:
            raise ConfigError(f"replication.listen: cannot bind {r.listen}")
        return server, port

    def _listen_host_port(self) -> str:
        return f"{self.config.replication.listen.rpartition(':')[0]}:{self.port}"

    def _run(self) -> None:
        r = self.config.replication
        next_scrub = time.monotonic() + r.scrub_interval_s
        while not self._stop.is_set():
            self.sender.run_once()
            failures = self.sender.stats.consecutive_failures
            # Back off while the peer is away: at most max_backoff_s between tries.
            delay = min(r.max_backoff_s, r.sender_interval_s * (2 ** min(failures, 16))) if failures \
                else r.sender_interval_s
            if time.monotonic() >= next_scrub:
                self._scrub()
                next_scrub = time.monotonic() + r.scrub_interval_s
            if failures:
                self._stop.wait(delay)  # the peer is away: stores ringing the doorbell do not shorten this
            elif not self._stop.is_set():
                self._wait_for_work(delay)

    def _scrub(self) -> None:
        try:
            report = self.scrubber.run_once()
            if report.shards_bad or report.unrecoverable:
                log.warning("scrub: %s", report)
            if report.lost:
                # The peer learns of these at its next probe and sends them again.
                marked = replicas.note_lost(self.env, self.config.replication.peer_name, report.lost, self.clock())
                log.error("scrub: %d of %s's instances have a replica that cannot be rebuilt here; %s is told",
                          marked, self.config.replication.peer_name, self.config.replication.peer_name)
        except Exception:  # noqa: BLE001 - logged; the next interval tries again
            log.exception("scrub pass failed")

    # -- status ----------------------------------------------------------------

    def status(self) -> ReplicationStatus:
        r, stats = self.config.replication, self.sender.stats
        backlog = outbox.backlog(self.env)
        age = self.clock() - backlog.oldest_enqueued_at if backlog.oldest_enqueued_at else 0.0
        state = stats.state
        if stats.consecutive_failures:
            state = "backing-off" if state == "error" else "unreachable"
        live = self.watch.now()
        last_error = stats.last_error
        if live.state in ("stalled", "unreachable"):
            # The probe's short deadline tells within seconds what the sender's long calls would not.
            state, last_error = live.state, f"peer {r.peer_address}: {live.detail}"
        elif live.state == "answering" and state == "idle":
            state = "connected"
        return ReplicationStatus(
            True, r.appliance_name, r.peer_name, r.peer_address, state, backlog.entries, backlog.bytes,
            max(0.0, age), stats.rate, stats.blobs_replicated, stats.bytes_replicated, last_error,
            r.rpo_warning_s, Catalog(self.env).repairs(), peer_lost.count(self.env),
            -1.0 if live.last_answer_age_s is None else live.last_answer_age_s,
        )

