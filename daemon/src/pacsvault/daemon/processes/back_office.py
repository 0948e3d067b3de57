"""The back office: the one process that runs what must run once per appliance.

It checks the data dir at start (encryption settings, volume identities,
unfinished writes and deletions a crash left), then runs the tier mover,
the replication sender and peer listener, the disk-health monitor, key
rotation, the ATNA export, audit checkpoints and the metrics endpoint, and
answers the operators' methods the serving processes forward to it.

``build`` is its composition root; ``main`` runs it as a child of the supervisor.
"""

from __future__ import annotations

import json
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pacsvault.daemon.appliance_health import ApplianceHealthReport
from pacsvault.daemon.audit.alert_follower import AlertFollower
from pacsvault.daemon.audit.alerts import AlertKind, AlertSink, describe_alert
from pacsvault.daemon.appliance_metrics import ApplianceCollector
from pacsvault.daemon.audit.exporter import AtnaScheduler, build_scheduler
from pacsvault.daemon.audit.tail_check import TailCheck
from pacsvault.daemon.audit.witness import delivery
from pacsvault.daemon import config as config_module
from pacsvault.daemon.audit.trail import AuditTrail, open_trail
from pacsvault.daemon.commitment import Commitments
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys, open_keys
from pacsvault.daemon.deletion import Deletion
from pacsvault.daemon.dimse.commitment import CommitmentReporter
from pacsvault.daemon.dimse.server import tls_files
from pacsvault.daemon.errors import ConfigError, PacsvaultError
from pacsvault.daemon.first_use import check_encryption_settings
from pacsvault.daemon.health import HealthMonitor, build_monitor
from pacsvault.daemon.health.model import Event as HealthEvent, EventKind
from pacsvault.daemon.index import outbox
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.integrity.startup import open_index
from pacsvault.daemon.integrity.wiring import Collaborators as IntegrityCollaborators
from pacsvault.daemon.integrity.wiring import IntegrityParts
from pacsvault.daemon.integrity.wiring import build as build_integrity
from pacsvault.daemon.key_rotation import KeyRotation
from pacsvault.daemon.dicomweb.door import server_ssl_context
from pacsvault.daemon.metrics import DaemonMetrics, MetricsServer
from pacsvault.daemon.metrics_https import Admission, admission
from pacsvault.daemon.processes import child, layout
from pacsvault.daemon.processes.doorbell import DoorbellListener
from pacsvault.daemon.processes.locks import BlobLocks, DataDirLock, VOLUME_LOCK_NAME
from pacsvault.daemon.replication.manager import ReplicationManager
from pacsvault.daemon.replication.peer_client import PeerClient, mtls_credentials
from pacsvault.daemon.retrieval import address
from pacsvault.daemon.security import production_guard
from pacsvault.daemon.security.break_glass_watch import BreakGlassWatch
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.server import create_internal_server, principal_resolver
from pacsvault.daemon.service.appliance_service import ApplianceServicer
from pacsvault.daemon.service.replication_service import ReplicationStatusServicer
from pacsvault.daemon.service.security_service import KeyServicer
from pacsvault.daemon.service.rebuild_service import RebuildingStorageServicer
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.tiered import Location, TieredBlobStore, Volume
from pacsvault.daemon.tiering.manager import TieringManager
from pacsvault.daemon.tiering.object_tier import is_directory
from pacsvault.daemon.tiering.scheduler import TieringScheduler
from pacsvault.daemon.tiering.volumes import open_store, register_configured
from pacsvault.v1 import appliance_pb2_grpc, replication_pb2_grpc, security_pb2_grpc, storage_pb2_grpc

log = logging.getLogger("pacsvaultd.back-office")
# Audit checkpoints are considered, security alerts followed, and stale LMDB readers of killed
# processes cleared, this often.
HOUSEKEEPING_S = 1.0
READER_CHECK_S = 30.0
# How long the start waits for the audit witness before serving anyway (the check is then retried).
TAIL_CHECK_WAIT_S = 3.0


@dataclass
class BackOfficeParts:
    config: Config
    run_dir: Path
    keys: ApplianceKeys | None
    index: IndexEnvironment
    store: TieredBlobStore
    tiering: TieringManager
    deletion: Deletion
    audit: AuditTrail | None
    peer: PeerClient | None
    replication: ReplicationManager | None
    key_rotation: KeyRotation | None
    monitor: HealthMonitor
    report: ApplianceHealthReport
    bell: DoorbellListener
    locks: BlobLocks
    scheduler: TieringScheduler
    atna: AtnaScheduler
    internal: grpc.Server
    integrity: IntegrityParts
    duties: AuditDuties
    volume_locks: list[DataDirLock] = field(default_factory=list)
    # Storage Commitment reports whose requester closed its association (the DIMSE door).
    commitment_reporter: CommitmentReporter | None = None

    def close(self) -> None:
        if self.commitment_reporter is not None:
            self.commitment_reporter.stop()
        for step in (self.monitor.stop, lambda: self.internal.stop(2).wait(), self.scheduler.stop, self.atna.stop,
                     self.integrity.stop, self.duties.stop):
            step()
        if self.replication is not None:
            self.bell.ring()
            self.replication.stop()
        if self.key_rotation is not None:
            self.key_rotation.stop()
        if self.audit is not None:
            self.audit.close()  # its last checkpoint, after everything that could still write
        if self.peer is not None:
            self.peer.close()
        self.monitor.join()
        self.index.close()
        self.bell.close()
        self.locks.close()
        for lock in self.volume_locks:
            lock.release()


@dataclass
class AuditDuties:
    """What the back office does for the trail besides checkpoints: the tail check, following alerts."""

    alerts: AlertSink
    tail_check: TailCheck | None = None
    follower: AlertFollower | None = None
    break_glass: BreakGlassWatch | None = None

    def run_once(self) -> None:
        if self.break_glass is not None:
            self.break_glass.run_once()
        if self.follower is not None:
            self.follower.run_once()

    def stop(self) -> None:
        if self.tail_check is not None:
            self.tail_check.stop()


def _audit_duties(audit: AuditTrail | None, alerts: AlertSink, peer: PeerClient | None,
                  monitor: HealthMonitor, credentials: CredentialStore) -> AuditDuties:
    if audit is None:
        return AuditDuties(alerts)

    def to_health(kind: AlertKind, record: Mapping[str, object]) -> None:
        who = str(record.get("principal") or record.get("peer_appliance") or "")
        monitor.publish(HealthEvent(EventKind.SECURITY_ALERT, kind.value, who, float(record.get("time", 0.0)),  # type: ignore[arg-type]
                                    describe_alert(kind, record)))

    witness = None if peer is None else (
        lambda min_seq, wait: peer.list_audit_checkpoints(min_seq, TAIL_CHECK_WAIT_S, wait_for_ready=wait))
    # The follower first: it starts where the trail ends now, so it sees what the tail check records.
    follower = AlertFollower(audit, to_health)
    return AuditDuties(alerts, TailCheck(audit, witness, alerts), follower, BreakGlassWatch(credentials, alerts))


def build(config: Config, run_dir: Path, clock: Callable[[], float] = time.time) -> BackOfficeParts:
    """Checks the data dir and builds the back office; nothing runs until ``start``."""
    keys = open_keys(config)
    index = open_index(config, keys)  # refused when damaged, or empty beside volumes full of blobs
    check_encryption_settings(index, keys)
    refused = register_configured(config, index, clock)
    sealer = BlobSealer(keys) if keys else None
    store = open_store(config, index, sealer, refused)
    volume_locks = _lock_volumes(store)
    tiering = TieringManager(config, index, store, clock)
    locks = BlobLocks(layout.blob_locks(run_dir))
    catalog = Catalog(index, replicate=config.replication.enabled)
    bell = DoorbellListener(layout.outbox_bell(run_dir))
    deletion = Deletion(catalog, store, locks, config.retention, on_changed=bell.ring, clock=clock)
    peer = _peer_client(config) if config.replication.enabled else None
    audit, alerts = _audit_trail(config, keys, peer, clock)
    if audit is not None:
        index.durable_before_commit.append(audit.flush)  # no change is committed ahead of its record
    replication = None
    if peer is not None:
        replication = ReplicationManager(
            config, index, lambda blob: store.open(address(blob), Location(blob.location.tier,
                                                                           blob.location.volume_id), stored=True),
            peer, bell.wait, clock, alerts)
    rotation = KeyRotation(index, store, keys.holder) if keys is not None else None
    monitor = build_monitor(config, lambda: [v for v in _refreshed(store) if is_directory(v)])
    integrity = build_integrity(config, IntegrityCollaborators(index, store, catalog, locks, deletion, audit, peer,
                                                               replication, monitor), clock)
    report = ApplianceHealthReport(index, tiering, replication.status if replication else None,
                                   insecure=production_guard.warnings(config), concerns=integrity.concerns)
    internal = create_internal_server(layout.back_office_socket(run_dir), [
        (appliance_pb2_grpc.add_ApplianceServiceServicer_to_server, ApplianceServicer(report, monitor)),
        (storage_pb2_grpc.add_StorageServiceServicer_to_server,
         RebuildingStorageServicer(tiering, integrity.rebuilder)),
        (replication_pb2_grpc.add_ReplicationServiceServicer_to_server,
         ReplicationStatusServicer(replication, lambda: _reseed(index, bell))),
        (security_pb2_grpc.add_SecurityServiceServicer_to_server, KeyServicer(keys, rotation)),
        *integrity.services,
    ])
    reporter = None
    if config.dicom.enabled:
        tls = tls_files(config)
        reporter = CommitmentReporter(config, index, Commitments(
            index, catalog, config.dicom.commit_after_replication, config.dicom.commitment_timeout_s, clock),
            tls.client if tls else None, clock)
    return BackOfficeParts(config, run_dir, keys, index, store, tiering, deletion, audit, peer, replication,
                           rotation, monitor, report, bell, locks, TieringScheduler(tiering),
                           build_scheduler(config, audit), internal, integrity,
                           _audit_duties(audit, alerts, peer, monitor, CredentialStore(index, clock)),
                           volume_locks, reporter)


def _refreshed(store: TieredBlobStore) -> list[Volume]:
    """The volumes as the index has them now (a worker may have found one failing since)."""
    store.refresh()
    return store.volumes


def _audit_trail(config: Config, keys: ApplianceKeys | None, peer: PeerClient | None,
                 clock: Callable[[], float]) -> tuple[AuditTrail | None, AlertSink]:
    """The back office's handle on the trail (it signs the checkpoints and hands them to the witness)."""
    if not config.audit.enabled:
        return None, AlertSink(None)
    # The sink is bound once the trail exists; the witness thread only calls it later.
    sink = AlertSink(None)
    witness = None if peer is None else delivery(peer.put_audit_checkpoint, sink)
    audit = open_trail(config, keys, witness=witness, checkpointing=True, clock=clock)
    sink.bind(audit)
    return audit, sink


def _reseed(index: IndexEnvironment, bell: DoorbellListener) -> int:
    queued = outbox.reseed(index, time.time())
    bell.ring()
    return queued


def _peer_client(config: Config) -> PeerClient:
    r = config.replication
    return PeerClient(r.peer_address, mtls_credentials(*map(config.resolve, (r.ca_file, r.cert_file, r.key_file))))


def _lock_volumes(store: TieredBlobStore) -> list[DataDirLock]:
    """One daemon per volume: another pacsvaultd (another data dir) configured on ours is refused."""
    held = []
    for volume in filter(is_directory, store.volumes):
        lock = DataDirLock(Path(volume.path), VOLUME_LOCK_NAME, what="tier volume")
        try:
            lock.acquire()
        except ConfigError:
            for other in held:
                other.release()
            raise
        held.append(lock)
    return held


def recover(parts: BackOfficeParts) -> None:
    """Checks the audit trail's tail; finishes what a crash left: deletions between their commit and
    their files, a re-wrap pass."""
    if parts.duties.tail_check is not None:
        parts.duties.tail_check.run_once(wait=False)  # before any worker appends; retried in start() if away
    destroyed = parts.deletion.destroy_doomed_blobs()
    if destroyed:
        log.info("destroyed %d blobs whose deletion a restart interrupted", destroyed)
    if parts.key_rotation is not None:
        parts.key_rotation.resume_if_needed()


def start(parts: BackOfficeParts) -> MetricsServer | None:
    """Starts every background job and the internal listener; returns the metrics listener."""
    parts.internal.start()
    parts.monitor.start()  # measures the volumes before anything reports on them
    metrics_server = None
    if parts.duties.tail_check is not None:
        parts.duties.tail_check.start()
    if parts.config.metrics.enabled:
        appliance = ApplianceCollector(parts.index, parts.tiering.mover,
                                       parts.replication.status if parts.replication else None,
                                       parts.audit, parts.atna.exporters)
        metrics = DaemonMetrics(parts.monitor, layout.metrics_dir(parts.run_dir),
                                lambda: layout.read_processes(parts.run_dir),
                                [appliance, *([parts.duties.follower] if parts.duties.follower else [])])
        for collector in parts.integrity.collectors:
            metrics.registry.register(collector)
        metrics_server = metrics.serve(parts.config.metrics, *_metrics_tls(parts))
    parts.scheduler.start()
    parts.atna.start()
    parts.integrity.start()
    if parts.replication is not None:
        parts.replication.start()
    if parts.commitment_reporter is not None:
        parts.commitment_reporter.start()
    return metrics_server


def _metrics_tls(parts: BackOfficeParts) -> tuple[ssl.SSLContext | None, Admission | None]:
    """HTTPS and who may scrape, with the [security] TLS files (as the API and DICOMweb: on any address)."""
    config = parts.config
    if not config.security.tls:
        return None, None
    resolver = principal_resolver(config, CredentialStore(parts.index))  # revocations, as the API checks them
    return server_ssl_context(config), admission(resolver)


def main() -> int:
    spec = child.start("back-office")
    stop = threading.Event()
    reload_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; a terminal's ^C reaches it too
    signal.signal(signal.SIGHUP, lambda *_: reload_requested.set())
    try:
        parts = build(spec.config, spec.run_dir)
        recover(parts)
        metrics_server = start(parts)
    except ConfigError as exc:
        child.report(error=f"configuration error: {exc}", exit=2)
        return 2
    except PacsvaultError as exc:
        child.report(error=f"cannot start: {exc}", exit=1)
        return 1
    child.report(ready=True, metrics_port=metrics_server.port if metrics_server else 0,
                 replication_port=parts.replication.port if parts.replication else 0)
    last_reader_check = time.monotonic()
    try:
        while not stop.wait(HOUSEKEEPING_S):
            if reload_requested.is_set():
                reload_requested.clear()
                _reload_volumes(parts)
            if parts.audit is not None:
                _safely(parts.audit.checkpoint_if_due)
                _safely(parts.duties.run_once)
            if time.monotonic() - last_reader_check > READER_CHECK_S:
                last_reader_check = time.monotonic()
                _safely(parts.index.env.reader_check)  # slots a killed process held
    finally:
        parts.close()
        if metrics_server is not None:
            metrics_server.close()
    log.info("back office stopped")
    return 0


def _reload_volumes(parts: BackOfficeParts) -> None:
    """SIGHUP: takes volumes newly listed in the config file into use; other changes need a restart."""
    try:
        fresh = config_module.from_dict(json.loads(layout.config_file(parts.run_dir).read_text()))
    except (ConfigError, OSError, ValueError) as exc:
        log.error("SIGHUP: config not reloaded: %s", exc)
        return
    known = {v.path for v in parts.store.volumes}
    for tier in fresh.tiers:
        for path in tier.volumes:
            resolved = str(parts.config.resolve(path))
            if resolved not in known:
                try:
                    parts.tiering.add_volume(tier.name, resolved)
                except PacsvaultError as exc:
                    log.error("SIGHUP: volume %s not added: %s", resolved, exc)
    log.info("SIGHUP: volumes reloaded; changes to other settings take effect at the next restart")


def _safely(job: object) -> None:
    try:
        job()  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - housekeeping is retried next round
        log.exception("housekeeping step %s failed", getattr(job, "__name__", job))


if __name__ == "__main__":
    raise SystemExit(main())
