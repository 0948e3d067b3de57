"""Putting a good copy of a blob back where a bad one was found: from another local copy first,
else from the peer. The bad copy is quarantined with its reason, never silently deleted.

Held under the blob's cross-process lock (``processes.locks.BlobLocks``), so no deletion
destroys the blob between the repair's look at its record and the index switch to the new copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, NotFound, PacsvaultError, StorageFull, Unavailable
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.records import BlobLocation, BlobRecord
from pacsvault.daemon.ingest import BlobLocking
from pacsvault.daemon.retrieval import address
from pacsvault.daemon.storage.stored_form import open_stored_form
from pacsvault.daemon.storage.tiered import TieredBlobStore, Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repaired:
    done: bool
    # "another local copy" or "the peer" when done; else why not.
    how: str
    # Nothing to repair after all: the blob was deleted meanwhile, or moved (the mover) and its
    # copy where the record now points is intact.
    moot: bool = False


class BlobRepair:
    def __init__(self, catalog: Catalog, store: TieredBlobStore, locks: BlobLocking,
                 fetch_verified: Callable[[Digest], bytes] | None) -> None:
        """``fetch_verified(name)``: the peer's copy of the stored form, checked against its name (None: no peer)."""
        self._catalog, self._store, self._locks, self._fetch = catalog, store, locks, fetch_verified

    def repair(self, blob: BlobRecord, problem: str) -> Repaired:
        digest = address(blob)
        with self._locks.holding(blob.digest):
            current = self._catalog.blob(digest)
            if current is None:
                return Repaired(False, "deleted meanwhile", moot=True)
            bad = self._store.volume(current.location.volume_id)
            if current.location.volume_id != blob.location.volume_id and bad is not None \
                    and self._good_copy(bad, digest):
                return Repaired(False, "moved meanwhile, intact", moot=True)
            if bad is not None and not bad.failed and bad.local.contains(digest):
                bad.local.quarantine(digest, problem)
            for volume in self._store.volumes:
                if volume is not bad and self._good_copy(volume, digest):
                    size = _stored_size(volume, digest)
                    self._catalog.relocate(digest, BlobLocation(tier=volume.tier, volume_id=volume.volume_id), size)
                    return Repaired(True, "another local copy")
            return self._from_peer(current, digest)

    def _from_peer(self, blob: BlobRecord, digest: Digest) -> Repaired:
        if self._fetch is None:
            return Repaired(False, "no other copy here and no peer to ask (replication is off)")
        if not blob.replica_digest:
            return Repaired(False, "no other copy here, and the peer does not hold it yet")
        try:
            stored = self._fetch(Digest(DigestFunction.BLAKE3, blob.replica_digest, blob.replica_size))
            data = open_stored_form(stored, self._store.sealer, self._store.address, digest, f"blob {digest.hex[:16]}")
            placed = self._place(digest, data, blob.location.tier)
        except (DataLoss, Unavailable, StorageFull) as exc:
            return Repaired(False, f"the peer could not give it back: {exc}")
        self._catalog.relocate(digest, BlobLocation(tier=placed.location.tier, volume_id=placed.location.volume_id),
                               placed.stored_bytes)
        self._catalog.count_repair()
        return Repaired(True, "the peer")

    def _place(self, digest: Digest, data: bytes, tier: str):  # type: ignore[no-untyped-def]
        try:
            return self._store.place(digest, data, [tier])  # where it was, preferably
        except StorageFull:
            return self._store.place(digest, data)

    @staticmethod
    def _good_copy(volume: Volume, digest: Digest) -> bool:
        if volume.failed or not volume.local.contains(digest):
            return False
        try:
            volume.access.verify(digest)  # type: ignore[attr-defined]
        except (DataLoss, NotFound, Unavailable):
            return False
        return True


def _stored_size(volume: Volume, digest: Digest) -> int:
    reader = volume.local.open(digest)
    try:
        return int(reader.size)
    finally:
        reader.close()


def describe(problem: PacsvaultError) -> str:
    """missing, unauthenticated (a sealed frame or key failed authentication: perhaps tampered with),
    unreadable (the volume erred) or damaged."""
    text = str(problem)
    if isinstance(problem, NotFound):
        return "missing"
    if isinstance(problem, Unavailable):
        return "unreadable"
    return "unauthenticated" if "authentic" in text else "damaged"
