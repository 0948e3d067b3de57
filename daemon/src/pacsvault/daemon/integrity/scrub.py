"""The local scrub: every blob on every tier read back and verified, in the background.

One pass walks the index's blob records in key order from a cursor kept in
the index (so a restart resumes where it stopped), paced to
``[scrub] max_bytes_per_s``. For each blob on a volume that is up, every
frame is read and authenticated and the whole checked against its address
(``CompressingBlobAccess.verify``). A blob found missing, truncated,
damaged or failing authentication is handed to ``ScrubFindings`` (books,
health event, audit alert, log) and repaired when it can be
(``BlobRepair``: another local copy, else the peer). A new pass starts
``[scrub] interval_s`` after the previous one started, or at once when an
operator asks (``StartScrub``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.config import ScrubConfig
from pacsvault.daemon.errors import DataLoss, NotFound, PacsvaultError, Unavailable
from pacsvault.daemon.index import integrity_books, rotation
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, ScrubState
from pacsvault.daemon.integrity.blob_repair import BlobRepair, describe
from pacsvault.daemon.integrity.findings import ScrubFindings
from pacsvault.daemon.retrieval import address
from pacsvault.daemon.storage.tiered import TieredBlobStore
from pacsvault.daemon.tiering.mover import RateLimiter

log = logging.getLogger(__name__)
BATCH_BLOBS = 128
BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Step:
    """What one ``run_once`` did."""

    blobs_checked: int = 0
    bytes_checked: int = 0
    found: int = 0
    pass_complete: bool = False


class LocalScrubber:
    def __init__(self, env: IndexEnvironment, store: TieredBlobStore, repair: BlobRepair, findings: ScrubFindings,
                 config: ScrubConfig, clock: Callable[[], float] = time.time,
                 limiter: RateLimiter | None = None) -> None:
        self._env, self._store, self._repair, self._findings = env, store, repair, findings
        self._config, self._clock = config, clock
        self._limiter = limiter or RateLimiter(config.max_bytes_per_s)

    # -- when -------------------------------------------------------------------

    def due_in(self) -> float:
        """Seconds until a pass has work to do (0: now)."""
        state = integrity_books.scrub_state(self._env)
        if state.requested or not state.idle and state.pass_started_at:
            return 0.0
        if not state.pass_started_at:
            return 0.0  # never ran: the first pass starts at once
        return max(0.0, state.pass_started_at + self._config.interval_s - self._clock())

    def request(self) -> bool:
        """Asks for a pass now; False when one is under way already (it goes on)."""
        state = integrity_books.scrub_state(self._env)
        under_way = bool(state.pass_started_at) and not state.idle
        if not under_way:
            integrity_books.update_scrub_state(self._env, lambda s: setattr(s, "requested", True))
        return not under_way

    # -- one step ---------------------------------------------------------------

    def run_once(self, max_blobs: int = BATCH_BLOBS, max_bytes: int = BATCH_BYTES) -> Step:
        """Verifies up to ``max_blobs`` blobs (or ``max_bytes``) from the cursor, then saves it."""
        state = integrity_books.scrub_state(self._env)
        if self.due_in() > 0:
            return Step()
        if state.idle or not state.pass_started_at or state.requested:
            state = self._begin_pass(state)
        page = rotation.blob_page(self._env, bytes(state.cursor), max_blobs)
        checked, size, found, last = 0, 0, 0, bytes(state.cursor)
        for key, blob in page:
            if size >= max_bytes:
                break
            self._limiter.take(max(blob.stored_bytes, 1))
            found += self._check(blob)
            checked, size, last = checked + 1, size + blob.stored_bytes, key
        complete = len(page) < max_blobs and checked == len(page)
        now = self._clock()

        def advance(s: ScrubState) -> None:
            s.cursor, s.pass_blobs_checked, s.pass_bytes_checked = last, s.pass_blobs_checked + checked, \
                s.pass_bytes_checked + size
            s.blobs_checked, s.bytes_checked = s.blobs_checked + checked, s.bytes_checked + size
            if complete:
                s.cursor, s.idle, s.last_pass_completed_at = b"", True, now
                s.passes_completed += 1

        integrity_books.update_scrub_state(self._env, advance)
        if complete:
            log.info("scrub: pass complete (%d blobs checked)", integrity_books.scrub_state(self._env).pass_blobs_checked)
        return Step(checked, size, found, complete)

    def _begin_pass(self, state: ScrubState) -> ScrubState:
        now = self._clock()

        def begin(s: ScrubState) -> None:
            s.cursor, s.pass_started_at, s.pass_blobs_checked, s.pass_bytes_checked = b"", now, 0, 0
            s.idle, s.requested = False, False

        log.info("scrub: pass started")
        return integrity_books.update_scrub_state(self._env, begin)

    def _check(self, blob: BlobRecord) -> int:
        """Verifies one blob; returns 1 when it was found bad."""
        volume = self._store.volume(blob.location.volume_id)
        if volume is None or volume.failed:
            return 0  # a volume that is away is health's concern, not a finding about this blob
        digest = address(blob)
        try:
            volume.access.verify(digest)  # type: ignore[attr-defined]
            return 0
        except (NotFound, DataLoss) as exc:
            problem: PacsvaultError = exc
        except Unavailable as exc:
            log.warning("scrub: blob %s on %s could not be read (%s); skipped", digest.hex[:16], volume.path, exc)
            return 0
        kind = describe(problem)
        reason = f"scrub: {kind}: {problem}"[:500]
        outcome = self._repair.repair(blob, reason)
        if outcome.moot:
            return 0
        self._findings.found(blob, kind, reason, outcome)
        return 1


class ScrubRunner:
    """The back office's scrub thread: a step whenever a pass has work, else a wait until one is due."""

    def __init__(self, scrubber: LocalScrubber, enabled: bool) -> None:
        self.scrubber, self.enabled = scrubber, enabled
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scrub", daemon=True)

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def request(self) -> bool:
        started = self.scrubber.request()
        self._wake.set()
        return started

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.scrubber.due_in()
                if wait <= 0:
                    self.scrubber.run_once()
                    continue
            except Exception:  # noqa: BLE001 - logged; tried again in a minute
                log.exception("scrub step failed")
                wait = 60.0
            self._wake.wait(min(wait, 60.0))
            self._wake.clear()
