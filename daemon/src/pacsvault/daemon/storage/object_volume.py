"""An object-store tier's volume: one bucket (and prefix) standing where a volume directory would.

The tier store, the mover and every process treat it as a ``Volume``. What
differs from a directory, and why:

- It cannot be unmounted, but it can be away. The back office looks at it
  every tiering pass (``health_check``): the bucket answers and its marker
  names this volume. A store that is away or refuses us is recorded as
  failed in the index (no process places data there, the mover pauses) and
  looked at again with backoff, 1 s doubling to 5 minutes, then taken back.
- A read error does not fail it: a caller's short deadline is no fault of
  the store. Reads of blobs there answer UNAVAILABLE naming the tier.
- Its capacity is the configured quota; its use is what the index counts on it.
- A blob the mover copies in is checked before it is sent (header, frame
  table, key slot) and proven by the transfer (the store checks each upload
  against our MD5): the object is exactly the source, and is not downloaded
  again. An object found there already is read back whole. The frames are
  authenticated at every read, and by the scrub.
- Where the bucket has Object Lock, a blob moved in gets the retention and
  legal hold the rules give (``retain``), so the store refuses an early delete.
- Scrub (the integrity issue) reads it as any volume: ``access.verify(digest)``
  and ``local.quarantine(digest, reason)`` work on objects too.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import ConfigError, FailedPrecondition, Unavailable
from pacsvault.daemon.storage.retention import Retention
from pacsvault.daemon.storage.s3 import S3BlobAccess
from pacsvault.daemon.storage.s3_client import deadline
from pacsvault.daemon.storage.s3_marker import read_marker
from pacsvault.daemon.storage.s3_state import S3StoreState, S3Usage
from pacsvault.daemon.storage.s3_stats import CallSummary
from pacsvault.daemon.storage.tiered import Volume

log = logging.getLogger(__name__)
# A look at the store answers within this, or counts as a failure.
PROBE_S = 5.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
# The listing of the tier's objects (one request per 1000) runs again after at least
# LISTING_MIN_S and ten times as long as it last took (so it never takes more than a tenth of
# the time); sooner than LISTING_MAX_S only when the index says the bytes there changed.
LISTING_MIN_S = 10.0
LISTING_MAX_S = 300.0
LISTING_SHARE = 10


@dataclass(frozen=True)
class ObjectStoreStatus:
    """What `pacsvault tiers` and health show of an object-store volume beyond any volume's figures."""

    objects: int | None  # as the store lists them; None until the first listing
    object_bytes: int | None
    listed_age_s: float | None
    object_lock: bool | None  # None until the store was first reached
    calls: CallSummary  # this process's calls of the last minutes (the back office: probes and the mover)
    next_probe_in_s: float | None  # while failed: when the store is looked at again


@dataclass
class _Probe:
    backoff_s: float = 0.0
    next_at: float = 0.0
    state: S3StoreState | None = None
    listing: S3Usage | None = None
    listed_at: float | None = None
    listing_took_s: float = 0.0
    warned_no_lock: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ObjectStoreVolume(Volume):
    """See the module docstring; ``local`` and ``store`` are the same S3BlobAccess."""

    backend: ClassVar[str] = "s3"

    store: S3BlobAccess | None = None
    marker_key: str = ""
    _probe: _Probe = field(default_factory=_Probe, repr=False)

    @property
    def objects(self) -> S3BlobAccess:
        assert self.store is not None
        return self.store

    # -- presence and health -------------------------------------------------------------------

    def still_mounted(self) -> bool:
        return True

    def check_present(self) -> bool:
        """No network here (a read path asks): what the last look found."""
        return not self.failed

    def health_check(self) -> bool:
        """Looks at the store (bucket, marker) unless a failed store's next look is not due yet."""
        now = time.monotonic()
        if self.failed and now < self._probe.next_at:
            return False
        try:
            with deadline(PROBE_S):
                state = self.objects.check()
                marker = read_marker(self.objects.calls, self.marker_key)
        except (ConfigError, Unavailable) as exc:
            self._looked_bad(str(exc), by_look=True)
            return False
        if marker != self.volume_id:
            found = "is missing" if marker is None else f"names volume {marker}"
            self._looked_bad(f"object store {self.objects.label}: its marker {found}, not {self.volume_id} "
                             "(another bucket or prefix, or it was emptied); nothing is written there",
                             by_look=True)
            return False
        self._probe.state, self._probe.backoff_s = state, 0.0
        if self.failed:
            log.warning("object-store tier %s (%s) answers again; it takes data again", self.tier, self.path)
            self.recover()
        self._refresh_listing(now)
        return True

    def transfer_failed(self, exc: Unavailable) -> None:
        """The mover could not copy into or out of the store: pause it there until a look succeeds."""
        self._looked_bad(str(exc))

    def read_failed(self, exc: Unavailable) -> None:
        """Counted in the call statistics; the periodic look decides whether the store is away."""

    def status(self) -> ObjectStoreStatus:
        probe, now = self._probe, time.monotonic()
        return ObjectStoreStatus(
            objects=probe.listing.objects if probe.listing else None,
            object_bytes=probe.listing.used if probe.listing else None,
            listed_age_s=now - probe.listed_at if probe.listed_at is not None else None,
            object_lock=probe.state.object_lock if probe.state else None,
            calls=self.objects.calls.stats.summary(),
            next_probe_in_s=max(0.0, probe.next_at - now) if self.failed else None)

    def _looked_bad(self, reason: str, *, by_look: bool = False) -> None:
        """A failed look waits twice as long as the last for the next; the transfers that fail
        together (several in flight) count once."""
        probe = self._probe
        with probe.lock:
            if not by_look and self.failed:
                return
            probe.backoff_s = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, probe.backoff_s * 2))
            probe.next_at = time.monotonic() + probe.backoff_s
            log.error("object-store tier %s: %s; no data goes there, next look in %.0fs", self.tier, reason,
                      probe.backoff_s)
            # The numbers in a reason (attempts, seconds) change at every look; the index is written
            # (and every process told) only when the reason itself changes.
            if _shape(self.failed) != _shape(reason):
                self.fail(reason)

    def _refresh_listing(self, now: float) -> None:
        if not self._listing_due(now):
            return
        try:
            self._probe.listing = self.objects.usage()
        except Unavailable as exc:
            log.warning("object-store tier %s: listing its objects failed (%s); kept the last count", self.tier, exc)
            return
        finally:
            self._probe.listed_at, self._probe.listing_took_s = now, time.monotonic() - now

    def _listing_due(self, now: float) -> bool:
        probe = self._probe
        if probe.listed_at is None or probe.listing is None:
            return True
        age = now - probe.listed_at
        if age < max(LISTING_MIN_S, LISTING_SHARE * probe.listing_took_s):
            return False
        try:
            changed = self.usage().used != probe.listing.used
        except OSError:
            changed = True
        return changed or age >= LISTING_MAX_S

    # -- what the mover asks ---------------------------------------------------------------------

    def transfers_at_once(self) -> int:
        return max(1, self.objects.settings.max_connections // 2)

    def copy_in(self, digest: Digest, stored: bytes) -> bool:
        """Checks the stored form's header and frame table (it is the blob, whole, and opens with our
        keyring), then uploads it: the store checks the bytes it received against our MD5, so the
        object is proven to be exactly the source, without a read-back."""
        self.access.check_structure(digest, stored)  # type: ignore[attr-defined]
        return self.objects.put_checked(digest, stored)[1]

    def verify_copy(self, digest: Digest, stored: bytes, proven: bool) -> None:
        if not proven:  # an object that was there already: read it back whole
            self.access.verify(digest)  # type: ignore[attr-defined]

    def retain(self, digest: Digest, retention: Retention | None) -> None:
        if retention is None or not retention.any:
            return
        if not self.has_object_lock():
            if not self._probe.warned_no_lock:
                self._probe.warned_no_lock = True
                log.warning("object-store tier %s: bucket %r has no Object Lock, so the store does not enforce "
                            "the retention and holds of the blobs moved there", self.tier, self.objects.settings.bucket)
            return
        until = retention.until_epoch_s
        if until is not None and until > time.time() + 1:
            try:
                self.objects.set_retention(digest, until, retention.mode)
            except FailedPrecondition as exc:  # the object keeps a longer retention already
                log.info("object-store tier %s: blob %s keeps its retention (%s)", self.tier, digest.hex[:16], exc)
        if retention.legal_hold:
            self.objects.set_legal_hold(digest, True)

    def has_object_lock(self) -> bool:
        if self._probe.state is None:
            self._probe.state = self.objects.check()
        return self._probe.state.object_lock


def _shape(reason: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", reason)
