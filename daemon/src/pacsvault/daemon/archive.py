"""The archive: ingest, find, retrieve and health, over the index and the blob store.

Ingest is ordered so that nothing acknowledged can be lost and nothing
half-stored is ever visible: digest, parse, make the blob durable, and only
then commit the index transaction that points at it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import lmdb

from pacsvault.daemon import __version__
from pacsvault.daemon.audit.trail import AuditTrail, open_trail
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys, open_keys
from pacsvault.daemon.dicom import json_model, uid
from pacsvault.daemon.dicom.parse import ParsedInstance, parse
from pacsvault.daemon.digest import Digest, DigestFunction, compute
from pacsvault.daemon.errors import (
    ConfigError,
    DataLoss,
    InvalidInput,
    NotFound,
    PacsvaultError,
    TooLarge,
    Unavailable,
)
from pacsvault.daemon.index import keys
from pacsvault.daemon.index import query as query_module
from pacsvault.daemon.index.catalog import AddOutcome, Catalog, NewBlob, repeat_outcome
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.query import Level, Match, Query
from pacsvault.daemon.index.records import BlobLocation, BlobRecord, InstanceRecord, StudyRecord, decode
from pacsvault.daemon.replication import restore
from pacsvault.daemon.security.scope import current_principal
from pacsvault.daemon.replication.manager import ReplicationManager
from pacsvault.daemon.replication.restore import RestoreProgress
from pacsvault.daemon.storage.blob_access import BlobReader, read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.key_rotation import KeyRotation
from pacsvault.daemon.storage.compressing import FramedReader
from pacsvault.daemon.storage.memory import BytesReader
from pacsvault.daemon.storage.tiered import Location, TieredBlobStore
from pacsvault.daemon.tiering.manager import TieringManager, VolumeStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    outcome: AddOutcome
    instance: ParsedInstance
    # The blob's address (keyed when encrypting), and the plain BLAKE3 of the
    # bytes received, which is what the client can check.
    digest: Digest
    message: str
    received: Digest


@dataclass(frozen=True)
class VolumeHealth:
    tier: str
    path: str
    state: str  # healthy, warning, critical
    reason: str
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    accepts_writes: bool


@dataclass(frozen=True)
class ApplianceHealth:
    state: str
    reasons: list[str]
    version: str
    uptime_s: float
    index: dict[str, int]
    volumes: list[VolumeHealth] = field(default_factory=list)


class Archive:
    """The domain core the gRPC servicers call, one method per use."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._started = time.monotonic()
        self.keys = open_keys(config)
        self.index = IndexEnvironment(
            config.resolve(config.index.path), map_size=config.index.map_size_bytes,
            max_batch=config.index.max_batch, keys=self.keys,
        )
        _check_encryption_settings(self.index, self.keys)
        self.catalog = Catalog(self.index, replicate=config.replication.enabled)
        # After the index: volumes are checked against what the index remembers.
        self.tiering = TieringManager(config, self.index, clock, BlobSealer(self.keys) if self.keys else None)
        self.blobs: TieredBlobStore = self.tiering.store
        self.replication: ReplicationManager | None = None
        if config.replication.enabled:
            self.replication = ReplicationManager(config, self.index, self.open_stored, clock)
        self.audit: AuditTrail | None = None
        if config.audit.enabled:
            witness = None
            if self.replication is not None:
                peer = self.replication.peer
                witness = lambda checkpoint: peer.put_audit_checkpoint(json.dumps(checkpoint, sort_keys=True))  # noqa: E731
            self.audit = open_trail(config, self.keys, clock=clock, witness=witness)
        self._blob_locks = [threading.Lock() for _ in range(64)]
        self.key_rotation: KeyRotation | None = None
        if self.keys is not None:
            self.key_rotation = KeyRotation(self.index, self.blobs, self.keys.holder)
            self.key_rotation.resume_if_needed()
        self.destroy_doomed_blobs()  # those a crash left between a delete's commit and its files

    def close(self) -> None:
        if self.key_rotation is not None:
            self.key_rotation.stop()
        if self.audit is not None:
            self.audit.close()
        if self.replication is not None:
            self.replication.stop()
        self.index.close()

    # -- ingest -----------------------------------------------------------

    def store(
        self, data: bytes | bytearray, expected: Digest | None = None,
        still_wanted: Callable[[], bool] = lambda: True, from_peer: bool = False, replica: Digest | None = None,
    ) -> StoreResult:
        """Stores one Part 10 file; durable before it returns.

        ``still_wanted`` is asked just before the index commit: a caller that
        has gone (cancelled, deadline passed) gets nothing indexed, since it
        could never learn that the store succeeded.
        """
        limit = self.config.limits.max_instance_bytes
        if len(data) > limit:
            raise TooLarge(f"instance of {len(data)} bytes is over limits.max_instance_bytes ({limit})")
        received = compute(data)
        if expected is not None and expected != received:
            raise InvalidInput(f"expected_digest {expected} does not match the bytes received ({received}); "
                               "nothing stored")
        digest = self.blobs.address(data) if self.blobs.sealer else received
        parsed = parse(data)
        known = self._known_instance(parsed.sop_instance_uid)
        if known is not None:
            outcome = repeat_outcome(known, parsed.sop_instance_uid, digest)
            return StoreResult(outcome, parsed, digest, "identical instance already stored", received)
        # Held from finding (or writing) the blob's copy to indexing it: a deleted
        # study's copy of the same bytes cannot be destroyed in between.
        with self._blob_lock(digest):
            blob = self.catalog.blob(digest)
            if blob is None:
                location, stored = self.blobs.place(digest, data)
                new_blob = NewBlob(digest, BlobLocation(tier=location.tier, volume_id=location.volume_id), stored,
                                   from_peer, replica)
            else:
                new_blob = NewBlob(digest, blob.location, blob.stored_bytes, from_peer, replica)
            if not still_wanted():
                raise Unavailable("the caller went away before the store was committed; nothing indexed")
            outcome = self.catalog.add_instance(parsed, new_blob, self._clock())
        if self.replication is not None and outcome is AddOutcome.STORED:
            self.replication.wake()
        message = "stored" if outcome is AddOutcome.STORED else "identical instance already stored"
        return StoreResult(outcome, parsed, digest, message, received)

    def _known_instance(self, sop_uid: str) -> InstanceRecord | None:
        with self.index.read() as txn:
            value = txn.get(sop_uid.encode(), db=self.index.db("instances"))
        return None if value is None else decode(InstanceRecord, value)

    def _blob_lock(self, digest: Digest) -> threading.Lock:
        return self._blob_locks[digest.hash[0] % len(self._blob_locks)]

    # -- delete -----------------------------------------------------------

    def delete_study(self, study_uid: str, reason: str) -> tuple[int, int]:
        """Deletes a study and destroys each blob it was the last user of; returns (instances, blobs destroyed).

        The index forgets the study in one transaction (and queues the same for
        the peer); only then are the blobs' copies destroyed, key slots first.
        """
        uid.check(study_uid, "study_instance_uid")
        if not reason.strip():
            raise InvalidInput("reason is required: say why the study is deleted (it is kept in the audit trail)")
        if len(reason) > 500:
            raise InvalidInput(f"reason is {len(reason)} characters; at most 500")
        deleted = self.catalog.delete_study(study_uid, self._clock())
        log.info("study deleted: %d instances, %d blobs released", len(deleted.sop_instance_uids),
                 deleted.blobs_released)
        if self.replication is not None:
            self.replication.wake()
        return len(deleted.sop_instance_uids), self.destroy_doomed_blobs()

    def destroy_doomed_blobs(self) -> int:
        """Destroys the copies of blobs whose last instance was deleted (also after a crash)."""
        destroyed = 0
        for blob in self.catalog.doomed_blobs():
            digest = _address(blob)
            with self._blob_lock(digest):
                try:
                    destroyed += self.catalog.destroy_doomed(blob, self._destroy_copy)
                except PacsvaultError as exc:
                    log.error("blob %s: its copy could not be destroyed yet (%s); retried at the next start",
                              digest.hex[:16], exc)
        return destroyed

    def _destroy_copy(self, blob: BlobRecord) -> None:
        volume = self.blobs.volume(blob.location.volume_id)
        if volume is None or volume.failed:
            raise Unavailable(f"volume {blob.location.volume_id} is not available")
        volume.access.delete(_address(blob))  # zeroes the key slots, then unlinks

    # -- find -------------------------------------------------------------

    def find(self, query: Query, page_size: int, page_token: str) -> tuple[list[Match], str]:
        narrowed = _narrow_to_scope(query)
        if narrowed is None:
            return [], ""  # outside a share's scope: as if nothing existed
        return query_module.find(self.index, narrowed, self._page_size(page_size), page_token)

    def patient_studies(self, patient_id: str, issuer: str, page_size: int, page_token: str) -> tuple[list[Match], str]:
        if not patient_id:
            raise InvalidInput("patient_id is required")
        query = Query(Level.STUDY, patient_id=patient_id, issuer_of_patient_id=issuer)
        return self.find(query, page_size, page_token)

    def _page_size(self, requested: int) -> int:
        limits = self.config.limits
        if requested < 0:
            raise InvalidInput("page_size must not be negative")
        return min(requested or limits.default_page_size, limits.max_page_size)

    # -- retrieve ---------------------------------------------------------

    def instance(self, sop_uid: str) -> tuple[InstanceRecord, BlobRecord]:
        instance, blob = self.catalog.instance(uid.check(sop_uid, "sop_instance_uid"))
        self._check_scope(instance.study_instance_uid, f"no instance with SOP Instance UID {sop_uid}")
        self.tiering.note_access(instance.study_instance_uid, [blob])
        return instance, blob

    def series_instances(self, series_uid: str) -> list[tuple[InstanceRecord, BlobRecord]]:
        members = self.catalog.series_instances(uid.check(series_uid, "series_instance_uid"))
        if members:
            self._check_scope(members[0][0].study_instance_uid, f"no series with Series Instance UID {series_uid}")
            self.tiering.note_access(members[0][0].study_instance_uid, [b for _, b in members])
        return members

    def study_instances(self, study_uid: str) -> list[tuple[InstanceRecord, BlobRecord]]:
        self._check_scope(uid.check(study_uid, "study_instance_uid"), f"no study with Study Instance UID {study_uid}")
        members = self.catalog.study_instances(study_uid)
        self.tiering.note_access(study_uid, [b for _, b in members])
        return members

    def _check_scope(self, study_uid: str, not_found: str) -> None:
        """A share grant sees its own study or patient, and nothing shows that others exist."""
        principal = current_principal.get()
        if principal is None or principal.scope is None:
            return
        scope = principal.scope
        if scope.study_instance_uid:
            if study_uid != scope.study_instance_uid:
                raise NotFound(not_found)
            return
        # The share keeps its patient as an identity (sealed with the grant); the study links to
        # its patient by keyed tags: compare tags, nothing needs opening.
        patient_key = self.index.tags.patient_key(*keys.split_share_scope(scope.patient_key))
        with self.index.read() as txn:
            value = txn.get(study_uid.encode(), db=self.index.db("studies"))
        if value is None or decode(StudyRecord, value).patient_key != patient_key:
            raise NotFound(not_found)

    # -- tiering requests -------------------------------------------------

    def pin(self, study_uid: str, until: str) -> StudyRecord:
        return self.tiering.pin(uid.check(study_uid, "study_instance_uid"), until)

    def prefetch(self, patient_id: str, issuer: str) -> tuple[int, int]:
        """Brings every study of the patient to the first tier; returns (studies, bytes) queued."""
        studies, token = [], ""
        while True:
            page, token = self.patient_studies(patient_id, issuer, self.config.limits.max_page_size, token)
            studies.extend(m.study for m in page if m.study is not None)
            if not token:
                return self.tiering.prefetch(studies)

    def open_blob(self, blob: BlobRecord) -> BlobReader:
        """The blob's original bytes (opened, decrypted, decompressed frame by frame)."""
        return self.blobs.open(_address(blob), Location(blob.location.tier, blob.location.volume_id))

    def open_stored(self, blob: BlobRecord) -> BlobReader:
        """The blob as it is at rest, still sealed: what the peer receives."""
        return self.blobs.open(_address(blob), Location(blob.location.tier, blob.location.volume_id), stored=True)

    def read_blob(self, instance: InstanceRecord, blob: BlobRecord) -> bytes:
        """The stored bytes, checked against their address before any leaves.

        A missing, unreadable or corrupt local copy is repaired from the peer
        when replication is on: the peer decodes its (still sealed) copy from
        verified shards, and it is opened and checked again here, then
        rewritten locally. Corruption at rest is also a security alert: a
        sealed blob that fails authentication may have been tampered with.
        """
        digest = _address(blob)
        try:
            reader = self.open_blob(blob)
            try:
                data = read_all(reader)
            finally:
                reader.close()
            if self.blobs.address(data).hash == digest.hash:
                return data
            problem: PacsvaultError = DataLoss("the stored bytes fail their digest")
        except (NotFound, DataLoss, Unavailable) as exc:
            problem = exc
        where = f"instance {instance.sop_instance_uid} of study {instance.study_instance_uid}"
        if isinstance(problem, DataLoss):
            self._security_alert(f"{where}: failed its integrity check at rest ({problem})", instance)
        if self.replication is None:
            raise type(problem)(f"{where}: {problem}") from problem
        if not blob.replica_digest:
            raise type(problem)(f"{where}: {problem}; the peer does not hold it yet, so it cannot be repaired")
        log.warning("%s: local copy unusable (%s); repairing from the peer", where, problem)
        try:
            stored = self.replication.fetch_verified(Digest(DigestFunction.BLAKE3, blob.replica_digest,
                                                            blob.replica_size))
            data = self.open_stored_form(stored, digest, where)
        except (DataLoss, Unavailable) as exc:
            raise type(exc)(f"{where}: local copy unusable ({problem}) and not repairable: {exc}") from exc
        self._rewrite_local(blob, digest, data)
        log.warning("%s: repaired from the peer", where)
        return data

    def content_digest(self, blob: BlobRecord, data: bytes) -> Digest:
        """The plain BLAKE3 of bytes read_blob returned, for the receiver to check: without
        sealing it is the blob's address, which read_blob has just verified."""
        return _address(blob) if self.blobs.sealer is None else compute(data)

    def open_stored_form(self, stored: bytes, expected: Digest | None, where: str) -> bytes:
        """The original bytes of a blob's stored form (as the peer keeps it), checked against its address."""
        reader = FramedReader(BytesReader(stored), where, self.blobs.sealer)
        address = reader.header.digest
        data = read_all(reader)
        if self.blobs.address(data) != address or (expected is not None and address != expected):
            raise DataLoss(f"{where}: the copy does not match its address")
        return data

    def _security_alert(self, reason: str, instance: InstanceRecord) -> None:
        log.error("SECURITY ALERT: %s", reason)
        if self.audit is None:
            return
        try:
            self.audit.record_security_alert(reason, instance.study_instance_uid, instance.sop_instance_uid)
        except Unavailable:
            log.exception("the security alert could not be recorded in the audit trail")

    def _rewrite_local(self, blob: BlobRecord, digest: Digest, data: bytes) -> None:
        volume = self.blobs.volume(blob.location.volume_id)
        if volume is not None and not volume.failed and volume.local.contains(digest):
            volume.local.quarantine(digest, "failed its digest check; repaired from the peer")
        location, stored = self.blobs.place(digest, data)
        self.catalog.relocate(digest, BlobLocation(tier=location.tier, volume_id=location.volume_id), stored)

    # -- replication --------------------------------------------------------

    def restore_from_peer(self) -> Iterator[RestoreProgress]:
        assert self.replication is not None
        yield from restore.restore_from_peer(
            self.replication.peer, lambda sop: self._known_instance(sop) is not None,
            self._store_from_peer)

    def _store_from_peer(self, stored: bytes, name: Digest) -> StoreResult:
        """Ingests a blob the peer held for us: its stored form, opened with the keyring."""
        if compute(stored) != name:
            raise DataLoss(f"the peer's copy {name.hex[:16]} fails its digest")
        data = self.open_stored_form(stored, None, f"blob {name.hex[:16]} from the peer")
        return self.store(data, from_peer=True, replica=name)

    def reseed_peer(self) -> int:
        queued = restore.reseed(self.index, self._clock())
        if self.replication is not None:
            self.replication.wake()
        return queued

    def study_metadata(self, study_uid: str) -> Iterator[tuple[str, str, str]]:
        """(SOP Instance UID, DICOM JSON, tier) for each instance, reading headers only."""
        for instance, blob in self.study_instances(study_uid):
            reader = self.open_blob(blob)
            try:
                yield instance.sop_instance_uid, json_model.instance_json(
                    reader, instance.study_instance_uid, instance.series_instance_uid,
                    instance.sop_instance_uid,
                ), blob.location.tier
            finally:
                reader.close()

    # -- health -----------------------------------------------------------

    def health(self) -> ApplianceHealth:
        volumes = [_volume_health(v) for v in self.tiering.status()]
        index = self.index.stats()
        reasons = [f"volume {v.path}: {v.reason}" for v in volumes if v.state != "healthy"]
        # A failed or refused volume may hold the only copy of studies: critical.
        state = max((v.state for v in volumes), key=["healthy", "warning", "critical"].index, default="critical")
        if not any(v.accepts_writes for v in volumes):
            state = "critical"
            reasons.insert(0, "no volume can take new data: stores will fail")
        if index["map_used"] > 0.9 * index["map_size"]:
            state = "critical" if state == "critical" else "warning"
            reasons.append(f"index is {100 * index['map_used'] / index['map_size']:.0f}% of index.map_size_bytes")
        if self.replication is not None:
            replication = self.replication.status()
            if replication.oldest_pending_age_s > replication.rpo_warning_s:
                state = "critical" if state == "critical" else "warning"
                reasons.append(
                    f"replication to {replication.peer} is {replication.oldest_pending_age_s:.0f}s behind "
                    f"(warning at {replication.rpo_warning_s:.0f}s; peer {replication.state}, "
                    f"{replication.pending_entries} changes pending)")
        return ApplianceHealth(state, reasons, __version__, time.monotonic() - self._started, index, volumes)


def _address(blob: BlobRecord) -> Digest:
    return Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes)


def _check_encryption_settings(index: IndexEnvironment, keys: ApplianceKeys | None) -> None:
    """Encryption is chosen when the data dir is first used (blob addresses depend on it), and
    the keyring must be the one it was first used with: anything else could read nothing."""
    wanted = b"1" if keys is not None else b"0"

    def first_use(txn: lmdb.Transaction) -> tuple[bytes, bytes | None]:
        meta = index.dbs["meta"]
        recorded = txn.get(_ENCRYPTION_KEY, db=meta)
        if recorded is None:
            txn.put(_ENCRYPTION_KEY, wanted, db=meta)
            if keys is not None:
                txn.put(_KEYRING_CHECK_KEY, keys.index_values.seal(_KEYRING_CHECK, _KEYRING_CHECK_KEY), db=meta)
            return wanted, None
        return bytes(recorded), txn.get(_KEYRING_CHECK_KEY, db=meta)

    recorded, check = index.write(first_use)
    if recorded != wanted:
        was, now = ("on" if recorded == b"1" else "off"), ("on" if keys is not None else "off")
        raise ConfigError(f"encryption.enabled is {now} but this data dir was created with it {was}; set it "
                          "back (changing it needs a new data dir and a restore from the peer)")
    if keys is not None and check is not None:
        try:
            keys.index_values.open(bytes(check), _KEYRING_CHECK_KEY, "the keyring check")
        except DataLoss as exc:
            raise ConfigError(f"the keyring {keys.holder.current.source or 'from encryption.key_command'} is not "
                              "the one this data dir was sealed with; nothing here could be read with it") from exc


_ENCRYPTION_KEY = b"encryption_enabled"
_KEYRING_CHECK_KEY = b"keyring_check"
_KEYRING_CHECK = b"pacsvault: this data dir is sealed under this keyring"


def _narrow_to_scope(query: Query) -> Query | None:
    """The query limited to the caller's share scope; None when it asks outside it."""
    principal = current_principal.get()
    if principal is None or principal.scope is None:
        return query
    scope = principal.scope
    if scope.study_instance_uid:
        if query.study_instance_uid not in ("", scope.study_instance_uid) or query.level == Level.PATIENT:
            return None
        return dataclasses.replace(query, study_instance_uid=scope.study_instance_uid)
    patient_id, issuer = keys.split_share_scope(scope.patient_key)
    if query.patient_id not in ("", patient_id) or query.issuer_of_patient_id not in ("", issuer):
        return None
    return dataclasses.replace(query, patient_id=patient_id, issuer_of_patient_id=issuer, issuer_exact=True)


def _volume_health(status: VolumeStatus) -> VolumeHealth:
    """A volume's tiering status in health terms: what an operator must act on."""
    if status.state in ("failed", "refused"):
        state, reason = "critical", f"{status.state}: {status.reason}"
    elif not status.accepts_writes and status.state == "active":
        state, reason = "warning", f"full: past its high watermark or reserve ({status.free_bytes} bytes free)"
    elif status.state == "draining":
        state, reason = "warning", f"draining: {status.blobs} blobs still to move"
    else:
        state, reason = "healthy", ""
    return VolumeHealth(
        status.tier, status.path, state, reason, status.capacity_bytes, status.used_bytes, status.free_bytes,
        accepts_writes=status.accepts_writes,
    )
