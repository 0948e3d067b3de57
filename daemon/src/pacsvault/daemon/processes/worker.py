"""A serving process: the client API on the shared port, ingest, find and retrieve.

Several run side by side (``server.workers``), each with its own interpreter
and so its own core; they share the LMDB index, the tier volumes and the
audit trail, and what one learns that the others must know goes through the
index. Operators' methods about what runs once per appliance are forwarded
to the back office.

``build`` is its composition root; ``main`` runs it as a child of the supervisor.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pacsvault.daemon import __version__
from pacsvault.daemon.audit.alerts import AlertSink
from pacsvault.daemon.audit.trail import AuditTrail, open_trail
from pacsvault.daemon.audit.verification import AuditVerification
from pacsvault.daemon.commitment import Commitments
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys, open_keys
from pacsvault.daemon.deletion import Deletion
from pacsvault.daemon.deletion_approval import DeletionApproval
from pacsvault.daemon.dicomweb.door import UseCases, start_web_door
from pacsvault.daemon.dicomweb.links import web_root
from pacsvault.daemon.dimse import server as dimse_server
from pacsvault.daemon.dimse.commitment import CommitmentScp
from pacsvault.daemon.dimse.connection import ConnectionPolicy
from pacsvault.daemon.dimse.find import FindScp
from pacsvault.daemon.dimse.guard import Guard
from pacsvault.daemon.dimse.retrieve import RetrieveScp
from pacsvault.daemon.dimse.store import StoreScp
from pacsvault.daemon.errors import ConfigError, PacsvaultError, Unavailable
from pacsvault.daemon.index import rotation
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import InstanceRecord
from pacsvault.daemon.instruments import (
    Instruments, MeteredIngest, MeteredRetrieval, instruments,
)
from pacsvault.daemon.integrity.read_books import ReadBooks
from pacsvault.daemon.lifecycle import Lifecycle
from pacsvault.daemon.processes import child, layout
from pacsvault.daemon.processes.doorbell import Doorbell
from pacsvault.daemon.processes.locks import BlobLocks
from pacsvault.daemon.processes.ports import with_port
from pacsvault.daemon.replication.peer_client import PeerClient, mtls_credentials
from pacsvault.daemon.replication.restore import restore_from_peer
from pacsvault.daemon.repair import Repairer
from pacsvault.daemon.search import Search
from pacsvault.daemon.security.credentials import CredentialStore
from pacsvault.daemon.security.scope import ScopeGuard
from pacsvault.daemon.server import Registration, Served, create_server, principal_resolver
from pacsvault.daemon.service.access_log import AccessLog
from pacsvault.daemon.service.archive_service import ArchiveServicer
from pacsvault.daemon.service.call_observer import CallObserver
from pacsvault.daemon.service.audit_service import AuditServicer
from pacsvault.daemon.service.caller_deadline import CallerDeadlineInterceptor
from pacsvault.daemon.service.forwarding import BackOffice, forwarding_servicer
from pacsvault.daemon.service.lifecycle_service import LifecycleServicer
from pacsvault.daemon.service.replication_service import ReplicationServicer
from pacsvault.daemon.service.security_service import SecurityServicer, ShareServicer
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.tiered import TieredBlobStore
from pacsvault.daemon.tiering import retention as object_lock
from pacsvault.daemon.tiering.reads import ClinicalRequests, ReadRecorder
from pacsvault.daemon.tiering.volumes import open_store
from pacsvault.v1 import (
    appliance_pb2,
    appliance_pb2_grpc,
    archive_pb2_grpc,
    audit_pb2_grpc,
    integrity_pb2,
    integrity_pb2_grpc,
    lifecycle_pb2_grpc,
    replication_pb2_grpc,
    security_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)

log = logging.getLogger("pacsvaultd.worker")
# How often a worker looks for a rotated keyring (a blob sealed under the old key meanwhile is
# listed for re-wrapping by its own commit, so this is about wasted work, not correctness).
KEYRING_CHECK_S = 1.0


@dataclass
class WorkerParts:
    config: Config
    keys: ApplianceKeys | None
    index: IndexEnvironment
    store: TieredBlobStore
    catalog: Catalog
    audit: AuditTrail | None
    peer: PeerClient | None
    reads: ReadRecorder
    ingest: MeteredIngest
    retrieval: MeteredRetrieval
    search: Search
    deletion: Deletion
    requests: ClinicalRequests
    credentials: CredentialStore
    back_office: BackOffice
    locks: BlobLocks
    bell: Doorbell
    services: list[Registration]
    meters: Instruments

    def close(self) -> None:
        self.reads.flush()
        if self.audit is not None:
            self.audit.close()
        if self.peer is not None:
            self.peer.close()
        self.back_office.close()
        self.index.close()
        self.bell.close()
        self.locks.close()


def build(config: Config, run_dir: Path, index: IndexEnvironment | None = None,
          clock: Callable[[], float] = time.time, web_port: int = 0) -> WorkerParts:
    """One serving process's objects, wired; the back office has already checked the data dir.

    ``index``: share an index already open in this process (tests that run a
    worker's and the back office's parts side by side; LMDB allows one
    environment per process).
    """
    keys = open_keys(config) if index is None else index.keys
    index = index or IndexEnvironment(config.resolve(config.index.path), map_size=config.index.map_size_bytes,
                                      max_batch=config.index.max_batch, keys=keys,
                                      reserve_percent=config.index.reserve_percent)
    store = open_store(config, index, BlobSealer(keys) if keys else None)
    catalog = Catalog(index, replicate=config.replication.enabled)
    locks = BlobLocks(layout.blob_locks(run_dir))
    bell = Doorbell(layout.outbox_bell(run_dir))
    audit = open_trail(config, keys, checkpointing=False) if config.audit.enabled else None
    if audit is not None:
        index.durable_before_commit.append(audit.flush)  # no change is committed ahead of its record
    peer = None
    if config.replication.enabled:
        r = config.replication
        peer = PeerClient(r.peer_address, mtls_credentials(*map(config.resolve, (r.ca_file, r.cert_file,
                                                                                  r.key_file))))
    first_tier = config.tiers[0].name
    reads = ReadRecorder(index, first_tier, config.tiering.promote_on_access, clock)
    meters = instruments()
    ingest = MeteredIngest(meters, config.limits, catalog, store, locks, on_stored=bell.ring, clock=clock)
    retrieval = MeteredRetrieval(meters, catalog, store, ScopeGuard(catalog, index.tags), reads,
                                 Repairer(catalog, store, peer.fetch_verified) if peer else None,
                                 _alert_to(audit), ReadBooks(index, clock).failed_read)
    search = Search(index, config.limits)
    deletion = Deletion(catalog, store, locks, config.retention, on_changed=bell.ring, clock=clock)
    lifecycle = Lifecycle(index, config.replication.enabled, on_changed=bell.ring, clock=clock,
                          on_hold=lambda study_uid, on: object_lock.hold_study(catalog, store, study_uid, on))
    credentials = CredentialStore(index, clock)
    requests = ClinicalRequests(index, search, first_tier, clock)
    back_office = BackOffice(layout.back_office_socket(run_dir))
    restore = None
    if peer is not None:
        restore = lambda: restore_from_peer(  # noqa: E731
            peer, lambda sop: catalog.known_instance(sop) is not None, ingest.store_from_peer)
    services: list[Registration] = [
        (archive_pb2_grpc.add_ArchiveServiceServicer_to_server, ArchiveServicer(
            config.limits, ingest, search, retrieval,
            DeletionApproval(deletion, catalog, index, config.security.delete_requires_second_admin, clock),
            requests, credentials, one_message_bytes=config.server.max_message_bytes - 64 * 1024)),
        (appliance_pb2_grpc.add_ApplianceServiceServicer_to_server, forwarding_servicer(
            appliance_pb2_grpc.ApplianceServiceServicer,
            appliance_pb2.DESCRIPTOR.services_by_name["ApplianceService"], back_office)),
        (storage_pb2_grpc.add_StorageServiceServicer_to_server, forwarding_servicer(
            storage_pb2_grpc.StorageServiceServicer, storage_pb2.DESCRIPTOR.services_by_name["StorageService"],
            back_office)),
        (integrity_pb2_grpc.add_IntegrityServiceServicer_to_server, forwarding_servicer(
            integrity_pb2_grpc.IntegrityServiceServicer,
            integrity_pb2.DESCRIPTOR.services_by_name["IntegrityService"], back_office)),
        (replication_pb2_grpc.add_ReplicationServiceServicer_to_server, ReplicationServicer(restore, back_office)),
        (security_pb2_grpc.add_SecurityServiceServicer_to_server, SecurityServicer(config, credentials,
                                                                                   back_office)),
        (security_pb2_grpc.add_ShareServiceServicer_to_server, ShareServicer(search, retrieval, credentials,
                                                                                 web_root(config, web_port))),
        (audit_pb2_grpc.add_AuditServiceServicer_to_server, AuditServicer(audit, _verification(audit, peer))),
        (lifecycle_pb2_grpc.add_LifecycleServiceServicer_to_server, LifecycleServicer(lifecycle, deletion)),
    ]
    return WorkerParts(config, keys, index, store, catalog, audit, peer, reads, ingest, retrieval, search,
                       deletion, requests, credentials, back_office, locks, bell, services, meters)


def open_dimse_door(parts: WorkerParts, port: int) -> dimse_server.DimseServed:
    """The DIMSE door of this serving process, on the DICOM port the supervisor reserved."""
    config = parts.config
    guard = Guard(config, principal_resolver(config, parts.credentials), parts.audit)
    tls = dimse_server.tls_files(config)
    commitments = Commitments(parts.index, parts.catalog, config.dicom.commit_after_replication,
                              config.dicom.commitment_timeout_s)
    handlers = dimse_server.evt_handlers(
        ConnectionPolicy(config.dicom.max_pdu_bytes, config.limits.max_instance_bytes), guard, StoreScp(guard, parts.ingest),
        FindScp(guard, parts.search, config.limits.max_page_size, config.dicom.ae_title),
        RetrieveScp(guard, parts.retrieval, parts.search, {d.name: d for d in config.dicom.destinations},
                    tls.client if tls else None),
        CommitmentScp(guard, commitments, parts.index, config.dicom.ae_title))
    return dimse_server.serve(config, port, handlers, tls)


def _verification(audit: AuditTrail | None, peer: PeerClient | None) -> AuditVerification | None:
    if audit is None:
        return None
    return AuditVerification(audit, peer.list_audit_checkpoints if peer else None, AlertSink(audit))


def _alert_to(audit: AuditTrail | None):  # type: ignore[no-untyped-def]
    def alert(reason: str, instance: InstanceRecord) -> None:
        if audit is None:
            return
        try:
            audit.record_security_alert(reason, instance.study_instance_uid, instance.sop_instance_uid)
        except Unavailable:
            log.exception("the security alert could not be recorded in the audit trail")
    return alert


class Housekeeping:
    """One thread per worker: whether any volume takes data (grpc.health), reads, a rotated keyring."""

    def __init__(self, parts: WorkerParts, served: Served) -> None:
        self._parts, self._served = parts, served
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def check_writable(self) -> None:
        store = self._parts.store
        store.refresh()
        # A full index refuses stores as surely as full disks do (its reserve is for deletes).
        self._served.set_writable(any(v.accepts(0) for v in store.volumes) and not self._parts.index.usage().exhausted)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        config = self._parts.config
        steps = [(self.check_writable, config.health.capacity_interval_s),
                 (self._parts.reads.flush, config.tiering.access_flush_interval_s),
                 (self._follow_keyring, KEYRING_CHECK_S)]
        due = {step: time.monotonic() + interval for step, interval in steps}
        while not self._stop.wait(0.2):
            for step, interval in steps:
                if time.monotonic() >= due[step]:
                    due[step] = time.monotonic() + interval
                    try:
                        step()
                    except Exception:  # noqa: BLE001 - retried next round
                        log.exception("housekeeping step %s failed", getattr(step, "__name__", step))

    def _follow_keyring(self) -> None:
        keys = self._parts.keys
        if keys is None:
            return
        index = self._parts.index
        with index.read() as txn:
            wanted = rotation.active_version(txn, index)
        if wanted > keys.holder.current.active:
            keys.holder.reload()
            log.info("key-encryption key version %d is active now (rotated)", keys.holder.current.active)


def main() -> int:
    spec = child.start("worker")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; a terminal's ^C reaches it too
    config = spec.config
    try:
        parts = build(config, spec.run_dir, web_port=spec.web_port)
        listen = with_port(config.server.listen, spec.port)
        served = create_server(config.with_overrides(listen=listen), parts.services, parts.credentials,
                               parts.audit, [CallObserver(parts.meters, AccessLog(config.server.access_log_per_s)),
                                             CallerDeadlineInterceptor()],
                               share_port=True, local_port=spec.local_port)
        web = start_web_door(config, UseCases(parts.search, parts.retrieval, parts.ingest, parts.credentials),
                             principal_resolver(config, parts.credentials), parts.audit,
                             spec.web_port, parts.meters) if spec.web_port else None
        dicom = open_dimse_door(parts, spec.dicom_port) if spec.dicom_port else None
    except ConfigError as exc:
        child.report(error=f"configuration error: {exc}", exit=2)
        return 2
    except PacsvaultError as exc:
        child.report(error=f"cannot start: {exc}", exit=1)
        return 1
    signal.signal(signal.SIGHUP, lambda *_: parts.store.refresh())
    housekeeping = Housekeeping(parts, served)
    housekeeping.check_writable()  # right from the start: NOT_SERVING when no volume can take data
    served.server.start()
    served.set_serving(True)
    housekeeping.start()
    child.report(ready=True, port=served.port)
    log.info("worker %d (pacsvaultd %s) serving on port %d", spec.index, __version__, served.port)
    stop.wait()
    # Every door drains at once: the grace period is the same for the whole process.
    draining = []
    if web is not None:
        draining.append(threading.Thread(target=web.stop, name="dicomweb-stop"))
    if dicom is not None:
        draining.append(threading.Thread(target=dicom.shutdown, args=(config.server.shutdown_grace_s,),
                                         name="dimse-stop"))
    for thread in draining:
        thread.start()
    served.shutdown(config.server.shutdown_grace_s)
    for thread in draining:
        thread.join()
    housekeeping.stop()
    parts.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
