"""The back office's integrity parts, built in one place: what runs in the background, what
the internal listener answers, what health and /metrics say. ``back_office.build`` calls
``build`` once and hands the result on; nothing here is built anywhere else."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.registry import Collector

from pacsvault.daemon.appliance_health import Concerns
from pacsvault.daemon.config import Config
from pacsvault.daemon.deletion import Deletion
from pacsvault.daemon.health import Event, EventKind, HealthMonitor
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.ingest import BlobLocking
from pacsvault.daemon.integrity import concerns as concern_checks
from pacsvault.daemon.integrity.blob_repair import BlobRepair
from pacsvault.daemon.integrity.check import Checker, PeerBooks
from pacsvault.daemon.integrity.findings import Alerts, ScrubFindings
from pacsvault.daemon.integrity.metrics import IntegrityCollector
from pacsvault.daemon.integrity.scrub import LocalScrubber, ScrubRunner
from pacsvault.daemon.integrity.volume_rebuild import VolumeRebuilder
from pacsvault.daemon.replication.manager import ReplicationManager
from pacsvault.daemon.replication.peer_client import PeerClient
from pacsvault.daemon.service.integrity_service import IntegrityServicer
from pacsvault.daemon.storage.tiered import TieredBlobStore
from pacsvault.daemon.tiering.readmission import readmit_returned
from pacsvault.hardware import Verdict
from pacsvault.v1 import integrity_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class IntegrityParts:
    scrub: ScrubRunner
    checker: Checker
    repair: BlobRepair
    rebuilder: VolumeRebuilder
    concerns: list[Concerns] = field(default_factory=list)
    # (add_*Servicer_to_server, servicer) for the back office's internal listener.
    services: list[tuple[Callable[..., None], object]] = field(default_factory=list)
    collectors: list[Collector] = field(default_factory=list)
    # Background jobs: (name, run one step, seconds between steps).
    jobs: list[tuple[str, Callable[[], object], Callable[[], float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.scrub.start()
        self.rebuilder.start()
        for name, step, interval in self.jobs:
            thread = threading.Thread(target=self._loop, args=(name, step, interval), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.scrub.stop()
        self.rebuilder.stop()
        for thread in self._threads:
            thread.join(timeout=60)

    def _loop(self, name: str, step: Callable[[], object], interval: Callable[[], float]) -> None:
        while not self._stop.wait(interval()):
            try:
                step()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("%s: step failed", name)


@dataclass(frozen=True)
class Collaborators:
    """What the integrity parts use of the rest of the back office."""

    index: IndexEnvironment
    store: TieredBlobStore
    catalog: Catalog
    locks: BlobLocking
    deletion: Deletion
    audit: object | None
    peer: PeerClient | None
    replication: ReplicationManager | None
    monitor: HealthMonitor


def build(config: Config, c: Collaborators, clock: Callable[[], float] = time.time) -> IntegrityParts:
    repair = BlobRepair(c.catalog, c.store, c.locks, c.peer.fetch_verified if c.peer else None)
    findings = ScrubFindings(c.index, Alerts(c.audit), _health_event(c.monitor, clock), clock)
    scrub = ScrubRunner(LocalScrubber(c.index, c.store, repair, findings, config.scrub, clock),
                        config.scrub.enabled)
    peer_books = None
    if c.replication is not None:
        shards = c.replication.shards
        peer_books = PeerBooks(config.replication.peer_name, config.replication.data_shards,
                               lambda name: len(shards.indexes(_Name(name))))
    checker = Checker(c.index, c.store, c.catalog, c.locks, repair, c.deletion.destroy_doomed_blobs,
                      config.integrity.orphan_grace_s, peer_books, clock)
    parts = IntegrityParts(scrub, checker, repair, VolumeRebuilder(c.index, repair, c.peer is not None))
    parts.concerns += [concern_checks.index(c.index), concern_checks.stored_data(c.index, clock)]
    if c.replication is not None:
        parts.concerns += [concern_checks.replication(c.replication.status),
                           concern_checks.kept_for_peer(c.index, config.replication.peer_name)]
    parts.services.append((integrity_pb2_grpc.add_IntegrityServiceServicer_to_server,
                           IntegrityServicer(c.index, config.scrub, scrub, checker)))
    parts.collectors.append(IntegrityCollector(c.index))
    parts.jobs.append(("readmit-volumes", lambda: readmit_returned(c.store),
                       lambda: config.health.capacity_interval_s))
    parts.jobs.append(("purge-trash", c.deletion.purge_due, lambda: config.retention.purge_interval_s))
    return parts


def _health_event(monitor: HealthMonitor, clock: Callable[[], float]) -> Callable[[str, str, str, bool], None]:
    def publish(subject: str, where: str, message: str, bad: bool) -> None:
        monitor.publish(Event(EventKind.STORED_DATA, subject, where, clock(), message,
                              new_verdict=Verdict.FAILED if bad else Verdict.WARNING))
    return publish


@dataclass(frozen=True)
class _Name:
    """A replica's name as the shard store takes it (function and hex of its hash)."""

    raw: bytes

    @property
    def function(self):  # type: ignore[no-untyped-def]
        from pacsvault.daemon.digest import DigestFunction

        return DigestFunction.BLAKE3

    @property
    def hex(self) -> str:
        return self.raw.hex()
