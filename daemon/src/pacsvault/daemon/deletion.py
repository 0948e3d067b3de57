"""Deletion of a study: the index forgets it in one transaction, then its blobs' copies are destroyed.

The index change (and the same change queued for the peer) commits first;
only then is each blob the study was the last user of destroyed, key slots
first (crypto-shredding). A crash in between leaves the blob listed as
doomed, and the back office finishes the job at the next start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import FailedPrecondition, InvalidInput, PacsvaultError, Unavailable
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.records import BlobRecord
from pacsvault.daemon.ingest import BlobLocking
from pacsvault.daemon.retrieval import address
from pacsvault.daemon.storage.tiered import TieredBlobStore

log = logging.getLogger(__name__)


class Deletion:
    def __init__(self, catalog: Catalog, store: TieredBlobStore, locks: BlobLocking,
                 on_changed: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.time) -> None:
        """``on_changed`` hears of every deletion (the replication sender's doorbell)."""
        self._catalog, self._store, self._locks = catalog, store, locks
        self._on_changed, self._clock = on_changed, clock

    def delete_study(self, study_uid: str, reason: str) -> tuple[int, int]:
        """Deletes a study and destroys each blob it was the last user of; returns (instances, blobs destroyed)."""
        uid.check(study_uid, "study_instance_uid")
        if not reason.strip():
            raise InvalidInput("reason is required: say why the study is deleted (it is kept in the audit trail)")
        if len(reason) > 500:
            raise InvalidInput(f"reason is {len(reason)} characters; at most 500")
        deleted = self._catalog.delete_study(study_uid, self._clock())
        log.info("study deleted: %d instances, %d blobs released", len(deleted.sop_instance_uids),
                 deleted.blobs_released)
        self._on_changed()
        return len(deleted.sop_instance_uids), self.destroy_doomed_blobs()

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
