"""Deletion: a study, a series or an instance goes to the trash, and later for good.

A delete passes two checks first, in the transaction that makes it: no legal
hold on the study, and the study is at least ``[retention] min_days`` old
(by when it was first stored, or its StudyDate). Then its instances leave
the live index for the trash (``index.trash``): invisible to find and
retrieval, still on disk and at the peer, restorable (``lifecycle``). After
``[retention] soft_delete_days`` the back office purges them: each blob they
were the last user of is doomed, and destroyed key slots first
(crypto-shredding), and the peer is told. A crash between the purge's
commit and the files leaves the blob listed as doomed; the back office
finishes the job at the next start.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.config import RetentionConfig
from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import FailedPrecondition, InvalidInput, PacsvaultError, Unavailable
from pacsvault.daemon.index import holds, trash
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.records import BlobRecord, StudyRecord
from pacsvault.daemon.ingest import BlobLocking
from pacsvault.daemon.retrieval import address
from pacsvault.daemon.storage.tiered import TieredBlobStore

log = logging.getLogger(__name__)
DAY_S = 86400.0


@dataclass(frozen=True)
class Deleted:
    instances: int
    blobs_destroyed: int
    # When the trash is purged (None: purged at once, soft_delete_days = 0).
    purge_after: float | None


class Deletion:
    def __init__(self, catalog: Catalog, store: TieredBlobStore, locks: BlobLocking,
                 retention: RetentionConfig | None = None, on_changed: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        """``on_changed`` hears of every change the peer must learn (the replication sender's doorbell)."""
        self._catalog, self._store, self._locks = catalog, store, locks
        self._retention = retention or RetentionConfig()
        self._on_changed, self._clock = on_changed, clock

    def delete_study(self, study_uid: str, reason: str, by: str = "") -> Deleted:
        return self.delete("study", study_uid, reason, by)

    def delete(self, level: str, target_uid: str, reason: str, by: str = "") -> Deleted:
        """Moves what ``level``/``target_uid`` names to the trash (and with no grace period, on for good)."""
        uid.check(target_uid, trash.UID_FIELDS[level])
        if not reason.strip():
            raise InvalidInput("reason is required: say why it is deleted (it is kept in the audit trail)")
        if len(reason) > 500:
            raise InvalidInput(f"reason is {len(reason)} characters; at most 500")
        now = self._clock()
        grace = self._retention.soft_delete_days * DAY_S
        trashed = trash.move_to_trash(self._catalog.env, level, target_uid, now, now + grace, reason, by,
                                      self._check)
        log.info("%s deleted: %d instances to the trash%s", level, len(trashed.sop_instance_uids),
                 f", purged after {grace / DAY_S:g} days" if grace else "")
        if grace:
            return Deleted(len(trashed.sop_instance_uids), 0, trashed.purge_after)
        _, destroyed = self._purge(trashed.sop_instance_uids, now)
        return Deleted(len(trashed.sop_instance_uids), destroyed, None)

    def refuse_if_kept(self, study_uid: str) -> None:
        """FailedPrecondition now for a study a delete would be refused (held, or too young)."""
        trash.check_deletable(self._catalog.env, "study", study_uid, self._check)

    def _check(self, txn: lmdb.Transaction, study: StudyRecord) -> None:
        """Refuses (nothing changed) a delete of a study under legal hold, or younger than min_days."""
        hold = holds.held(txn, self._catalog.env, study.study_instance_uid)
        if hold is not None:
            raise FailedPrecondition(f"study {study.study_instance_uid} is under legal hold ({hold.reason!r}, placed "
                                     f"by {hold.placed_by or 'an admin'}): nothing of it may be deleted until "
                                     "the hold is removed")
        days = self._retention.min_days
        if not days:
            return
        since = self._kept_since(study)
        if since is not None and self._clock() - since < days * DAY_S:
            until = datetime.datetime.fromtimestamp(since + days * DAY_S, datetime.UTC).date()
            raise FailedPrecondition(f"study {study.study_instance_uid} is younger than [retention] min_days "
                                     f"({days} days, by {self._retention.basis}): it may be deleted from {until}")

    def _kept_since(self, study: StudyRecord) -> float | None:
        if self._retention.basis == "ingest":
            return study.first_stored_at
        copy = StudyRecord()
        copy.CopyFrom(study)
        date = self._catalog.env.sealer.open(copy, "studies", study.study_instance_uid.encode()).study_date
        try:
            return datetime.datetime.strptime(date, "%Y%m%d").replace(tzinfo=datetime.UTC).timestamp()
        except ValueError:
            return study.first_stored_at  # no usable StudyDate: when it was stored is all there is

    def purge_due(self) -> tuple[int, int]:
        """Purges everything in the trash whose time has come (but for held studies); returns
        (instances purged, blobs destroyed)."""
        now, purged, destroyed = self._clock(), 0, 0
        while due := trash.due(self._catalog.env, now):
            instances, blobs = self._purge(due, now)
            purged, destroyed = purged + instances, destroyed + blobs
            if not instances:
                break  # all held: they stay until their hold is lifted
        if purged:
            log.info("trash: %d instances purged, %d blobs destroyed", purged, destroyed)
        return purged, destroyed

    def _purge(self, sop_uids: list[str], now: float) -> tuple[int, int]:
        env = self._catalog.env
        done = trash.purge(env, sop_uids, now, self._catalog.replicate,
                           lambda txn, study_uid: holds.held(txn, env, study_uid) is not None)
        if done.instances:
            self._on_changed()
        return done.instances, self.destroy_doomed_blobs()

    def destroy_doomed_blobs(self) -> int:
        """Destroys the copies of blobs whose last instance was deleted (also after a crash)."""
        destroyed = 0
        for blob in self._catalog.doomed_blobs():
            with self._locks.holding(blob.digest):
                try:
                    destroyed += self._catalog.destroy_doomed(blob, self._destroy_copy)
                except FailedPrecondition as exc:  # an object store keeps it under Object Lock until then
                    log.info("blob %s: its copy is kept for now (%s); destroyed at a later start",
                             blob.digest.hex()[:16], exc)
                except PacsvaultError as exc:
                    log.error("blob %s: its copy could not be destroyed yet (%s); retried at the next start",
                              blob.digest.hex()[:16], exc)
        return destroyed

    def _destroy_copy(self, blob: BlobRecord) -> None:
        self._store.refresh()
        volume = self._store.volume(blob.location.volume_id)
        if volume is None or volume.failed:
            raise Unavailable(f"volume {blob.location.volume_id} is not available")
        volume.access.delete(address(blob))  # zeroes the key slots, then unlinks
