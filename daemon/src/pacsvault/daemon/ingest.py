"""Ingest: one Part 10 file in, durable and indexed before it is acknowledged.

Ordered so that nothing acknowledged can be lost and nothing half-stored is
ever visible: digest, parse, write the blob, make it durable, and only then
commit the index transaction that points at it (and queues it for the
peer). The last two are group-committed: the index writer flushes each
volume once for every store in its batch (and the audit trail), then
commits the batch, then answers them all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pacsvault.daemon.config import LimitsConfig
from pacsvault.daemon.dicom.parse import ParsedInstance, parse
from pacsvault.daemon.digest import Digest, compute
from pacsvault.daemon.errors import BlobGone, DataLoss, InvalidInput, PacsvaultError, TooLarge, Unavailable
from pacsvault.daemon.index.catalog import AddOutcome, Catalog, NewBlob, repeat_outcome
from pacsvault.daemon.index.records import BlobLocation
from pacsvault.daemon.storage.stored_form import open_stored_form
from pacsvault.daemon.storage.tiered import TieredBlobStore

log = logging.getLogger(__name__)


class BlobLocking(Protocol):
    """Keeps ingest reusing a blob's copy and deletion destroying it from overlapping (processes.locks)."""

    def holding(self, digest_hash: bytes) -> contextlib.AbstractContextManager[None]: ...


@dataclass(frozen=True)
class StoreResult:
    outcome: AddOutcome
    instance: ParsedInstance
    # The blob's address (keyed when encrypting), and the plain BLAKE3 of the
    # bytes received, which is what the client can check.
    digest: Digest
    message: str
    received: Digest


class Ingest:
    def __init__(self, limits: LimitsConfig, catalog: Catalog, store: TieredBlobStore, locks: BlobLocking,
                 on_stored: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.time) -> None:
        """``on_stored`` hears of every new instance (the replication sender's doorbell)."""
        self._limits, self._catalog, self._store, self._locks = limits, catalog, store, locks
        self._on_stored, self._clock = on_stored, clock

    def store(
        self, data: bytes | bytearray, expected: Digest | None = None,
        still_wanted: Callable[[], bool] = lambda: True, from_peer: bool = False, replica: Digest | None = None,
        claimed: tuple[str, str] | None = None,
    ) -> StoreResult:
        """Stores one Part 10 file; durable before it returns.

        ``still_wanted`` is asked just before the index commit: a caller that
        has gone (cancelled, deadline passed) gets nothing indexed, since it
        could never learn that the store succeeded. ``claimed``: the (SOP Class UID,
        SOP Instance UID) the sender named beside the bytes (DIMSE C-STORE's command);
        a dataset that says otherwise is refused.
        """
        limit = self._limits.max_instance_bytes
        if len(data) > limit:
            raise TooLarge(f"instance of {len(data)} bytes is over limits.max_instance_bytes ({limit})")
        received = compute(data)
        if expected is not None and expected != received:
            raise InvalidInput(f"expected_digest {expected} does not match the bytes received ({received}); "
                               "nothing stored")
        digest = self._store.address(data) if self._store.sealer else received
        parsed = parse(data)
        if claimed is not None:
            _check_claim(parsed, claimed)
        known = self._catalog.known_instance(parsed.sop_instance_uid)
        if known is not None:
            outcome = repeat_outcome(known, parsed.sop_instance_uid, digest)
            return StoreResult(outcome, parsed, digest, "identical instance already stored", received)
        # Held from finding (or writing) the blob's copy to indexing it: a deleted
        # study's copy of the same bytes cannot be destroyed in between.
        with self._locks.holding(digest.hash):
            try:
                outcome = self._place_and_index(parsed, digest, data, still_wanted, from_peer, replica, reuse=True)
            except BlobGone:
                # The copy found was moved or deleted before the commit: write one of our own.
                outcome = self._place_and_index(parsed, digest, data, still_wanted, from_peer, replica, reuse=False)
        if outcome is AddOutcome.STORED:
            self._on_stored()
        message = "stored" if outcome is AddOutcome.STORED else "identical instance already stored"
        return StoreResult(outcome, parsed, digest, message, received)

    def _place_and_index(self, parsed: ParsedInstance, digest: Digest, data: bytes | bytearray,
                         still_wanted: Callable[[], bool], from_peer: bool, replica: Digest | None,
                         reuse: bool) -> AddOutcome:
        existing = self._catalog.blob(digest) if reuse else None
        durable_first: tuple[Callable[[], None], ...] = ()
        if existing is not None:
            new_blob = NewBlob(digest, existing.location, existing.stored_bytes, from_peer, replica, reused=True)
            if not still_wanted():
                raise Unavailable("the caller went away before the store was committed; nothing indexed")
            return self._catalog.add_instance(parsed, new_blob, self._clock())
        sealed_under = self._store.sealer.active_version if self._store.sealer else 0
        # Not flushed here: the index's group commit flushes each volume once for all the
        # stores in its batch, and commits only after that flush returned.
        placed = self._store.place(digest, data, sync=False)
        new_blob = NewBlob(digest, BlobLocation(tier=placed.location.tier, volume_id=placed.location.volume_id),
                           placed.stored_bytes, from_peer, replica, sealed_under=sealed_under)
        durable_first = (placed.flush,)
        try:
            if not still_wanted():
                raise Unavailable("the caller went away before the store was committed; nothing indexed")
            return self._catalog.add_instance(parsed, new_blob, self._clock(), durable_first)
        except BaseException:
            # Refused (a patient conflict, a full index, a caller gone): no record names the copy
            # just written, and none can while this store holds the blob's lock, so it goes now
            # rather than leak as an orphan.
            self._discard(placed.location.volume_id, digest)
            raise

    def _discard(self, volume_id: str, digest: Digest) -> None:
        volume = self._store.volume(volume_id)
        if volume is None:
            return
        try:
            volume.access.delete(digest)  # key slots zeroed first, like any deletion
        except PacsvaultError as exc:
            log.warning("blob %s of a refused store could not be removed (%s); `pacsvault check` lists it",
                        digest.hex[:16], exc)

    def store_from_peer(self, stored: bytes, name: Digest) -> StoreResult:
        """Ingests a blob the peer held for us: its stored form, opened with the keyring."""
        if compute(stored) != name:
            raise DataLoss(f"the peer's copy {name.hex[:16]} fails its digest")
        data = open_stored_form(stored, self._store.sealer, self._store.address, None,
                                f"blob {name.hex[:16]} from the peer")
        return self.store(data, from_peer=True, replica=name)


def _check_claim(parsed: ParsedInstance, claimed: tuple[str, str]) -> None:
    sop_class, sop_instance = claimed
    if parsed.sop_class_uid != sop_class:
        raise InvalidInput(f"the data set's SOP Class UID {parsed.sop_class_uid} is not the one sent with it "
                           f"({sop_class}); nothing stored")
    if parsed.sop_instance_uid != sop_instance:
        raise InvalidInput(f"the data set's SOP Instance UID {parsed.sop_instance_uid} is not the one sent with it "
                           f"({sop_instance}); nothing stored")
