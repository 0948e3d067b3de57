"""Repair of a local blob from the peer: fetch its stored form, open and check it here, rewrite it.

The peer decodes its (still sealed) copy from verified shards; it is opened
with the keyring and checked against its address again here, then written to
a volume as a fresh copy (the bad one is quarantined with a reason, never
silently deleted) and the index pointed at it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, PacsvaultError, Unavailable
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.records import BlobLocation, BlobRecord, InstanceRecord
from pacsvault.daemon.storage.stored_form import open_stored_form
from pacsvault.daemon.storage.tiered import TieredBlobStore

log = logging.getLogger(__name__)


class Repairer:
    def __init__(self, catalog: Catalog, store: TieredBlobStore, fetch_verified: Callable[[Digest], bytes]) -> None:
        """``fetch_verified(name)``: the blob's stored form from the peer, checked against its name there."""
        self._catalog, self._store, self._fetch = catalog, store, fetch_verified

    def repair(self, instance: InstanceRecord, blob: BlobRecord, address: Digest, problem: PacsvaultError) -> bytes:
        where = f"instance {instance.sop_instance_uid} of study {instance.study_instance_uid}"
        if not blob.replica_digest:
            raise type(problem)(f"{where}: {problem}; the peer does not hold it yet, so it cannot be repaired")
        log.warning("%s: local copy unusable (%s); repairing from the peer", where, problem)
        try:
            stored = self._fetch(Digest(DigestFunction.BLAKE3, blob.replica_digest, blob.replica_size))
            data = open_stored_form(stored, self._store.sealer, self._store.address, address, where)
        except (DataLoss, Unavailable) as exc:
            raise type(exc)(f"{where}: local copy unusable ({problem}) and not repairable: {exc}") from exc
        self._rewrite_local(blob, address, data)
        self._catalog.count_repair()
        log.warning("%s: repaired from the peer", where)
        return data

    def _rewrite_local(self, blob: BlobRecord, digest: Digest, data: bytes) -> None:
        volume = self._store.volume(blob.location.volume_id)
        if volume is not None and not volume.failed and volume.local.contains(digest):
            volume.local.quarantine(digest, "failed its digest check; repaired from the peer")
        placed = self._store.place(digest, data)
        self._catalog.relocate(digest, BlobLocation(tier=placed.location.tier, volume_id=placed.location.volume_id),
                               placed.stored_bytes)
