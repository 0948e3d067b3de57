"""Scrub at the peer: verify every shard, rebuild the damaged and the missing.

One ``run_once`` pass handles at most ``max_blobs`` blobs, in the store's
listing order, from a persisted cursor, paced by a byte-rate limit, so a
scheduler can run it forever without starving ingest. For each blob:

1. read every present shard, check its header, BLAKE3, blob digest, code and index;
2. if any is bad or missing and at least k are good, decode from the good
   ones, verify the blob digest, re-encode, and write the lost shards durably
   (bad ones are quarantined with their reason first, never silently deleted);
3. with fewer than k good, leave everything as found and report the blob.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pacsvault.daemon.errors import DataLoss, InvalidInput, Unavailable
from pacsvault.daemon.storage.durable import replace_file
from pacsvault.daemon.replication.codec import ErasureCodec
from pacsvault.daemon.replication.shard_format import ShardHeader
from pacsvault.daemon.replication.shard_store import ShardKey, ShardStore
from pacsvault.daemon.tiering.mover import RateLimiter

log = logging.getLogger(__name__)
CURSOR_FORMAT = 1
CodecFactory = Callable[[int, int, str], ErasureCodec]


@dataclass
class ScrubReport:
    """What one pass saw and did."""

    blobs_checked: int = 0
    shards_checked: int = 0
    shards_bad: int = 0
    shards_missing: int = 0
    shards_rebuilt: int = 0
    bytes_read: int = 0
    # str(digest), or "<function>/<hex> (...)" when no header tells the digest.
    unrecoverable: list[str] = field(default_factory=list)
    # The names (hash) of the blobs not rebuildable here, with why: their owner sends them again.
    lost: dict[bytes, str] = field(default_factory=dict)
    # Blobs skipped for a reason that is not data loss (a volume erroring, an unknown scheme).
    errors: list[str] = field(default_factory=list)
    # True when this pass reached the end of the listing; the next starts over.
    pass_complete: bool = False
    # Where the next pass resumes (a ShardKey token); None: from the start.
    cursor: str | None = None


@dataclass
class _Cursor:
    after: str | None = None
    passes_completed: int = 0


class ShardScrubber:
    """Resumable, rate-limited verification and repair of a ShardStore.

    Args:
        store: the shards to scrub.
        codec_factory: builds the codec of a blob from (k, m, scheme) in its headers.
        clock: monotonic seconds, for the rate limiter.
        rate_limit_bytes_per_s: shard bytes read per second at most; None for no limit.
        cursor_path: JSON file holding where the next pass resumes.
        sleep: how the rate limiter waits (tests pass a fake that advances ``clock``).
    """

    def __init__(self, store: ShardStore, codec_factory: CodecFactory = ErasureCodec,
                 clock: Callable[[], float] = time.monotonic, rate_limit_bytes_per_s: float | None = None,
                 cursor_path: Path | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_limit_bytes_per_s is not None and rate_limit_bytes_per_s <= 0:
            raise InvalidInput(f"scrub rate limit must be positive, got {rate_limit_bytes_per_s}")
        self.store = store
        self.cursor_path = cursor_path or store.volumes[0] / "scrub-cursor.json"
        self._codec_factory = codec_factory
        self._codecs: dict[tuple[int, int, str], ErasureCodec] = {}
        self._limiter = RateLimiter(rate_limit_bytes_per_s, clock, sleep) if rate_limit_bytes_per_s else None

    def run_once(self, max_blobs: int = 1000) -> ScrubReport:
        """Scrubs up to ``max_blobs`` blobs from the cursor, then saves the cursor."""
        cursor = self._load_cursor()
        report = ScrubReport()
        for key in self.store.iter_keys(after=cursor.after):
            if report.blobs_checked >= max_blobs:
                break
            self._scrub_blob(key, report)
            report.blobs_checked += 1
            cursor.after = key.token
        else:
            cursor.after, report.pass_complete = None, True
            cursor.passes_completed += 1
        self._save_cursor(cursor)
        report.cursor = cursor.after
        return report

    def _scrub_blob(self, key: ShardKey, report: ScrubReport) -> None:
        header = self.store.header_of(key)
        if header is None:
            report.unrecoverable.append(f"{key.token} (no intact shard header)")
            log.error("scrub: blob %s has no shard with an intact header", key.token)
            return
        try:
            codec = self._codec(header)
            good, bad = self._check_shards(codec, header, report)
            self._repair(codec, header, good, bad, report)
        except (Unavailable, InvalidInput) as exc:
            report.errors.append(f"{header.digest}: {exc}")
            log.warning("scrub: skipped blob %s: %s", header.digest, exc)

    def _check_shards(self, codec: ErasureCodec, header: ShardHeader,
                      report: ScrubReport) -> tuple[dict[int, bytes], dict[int, str]]:
        good: dict[int, bytes] = {}
        bad: dict[int, str] = {}
        for index in self.store.indexes(header.digest):
            raw = self.store.get(header.digest, index)
            if raw is None:
                continue
            if self._limiter is not None:
                self._limiter.take(len(raw))
            report.bytes_read += len(raw)
            report.shards_checked += 1
            try:
                codec.check_shard(header.digest, raw, index)
                good[index] = raw
            except DataLoss as exc:
                bad[index] = str(exc)
        return good, bad

    def _repair(self, codec: ErasureCodec, header: ShardHeader, good: dict[int, bytes],
                bad: dict[int, str], report: ScrubReport) -> None:
        digest = header.digest
        lost = [index for index in range(codec.total) if index not in good]
        report.shards_bad += len(bad)
        report.shards_missing += len([index for index in lost if index not in bad])
        if not lost and not bad:
            return
        try:
            rebuilt = codec.rebuild(digest, good.values(), lost)
        except DataLoss as exc:
            # The good shards stay as found: a later look (or a person) may still use them. The
            # bad ones are set aside (never used in a decode anyway), so that the copy the owner
            # sends again (report.lost) lands beside the good ones instead of being refused.
            for index, reason in bad.items():
                self.store.quarantine(digest, index, f"scrub: {reason} (blob not rebuildable here)")
            report.unrecoverable.append(str(digest))
            report.lost[digest.hash] = str(exc)
            log.error("scrub: blob %s is unrecoverable here: %s", digest, exc)
            return
        for index, reason in bad.items():
            self.store.quarantine(digest, index, f"scrub: {reason}")
        for index, raw in rebuilt.items():
            self.store.put(digest, index, raw)
            report.shards_rebuilt += 1
        log.info("scrub: blob %s: rebuilt shards %s", digest, sorted(rebuilt))

    def _codec(self, header: ShardHeader) -> ErasureCodec:
        # Building a pyeclib driver is not free; blobs share a handful of codes.
        code = (header.k, header.m, header.scheme)
        if code not in self._codecs:
            self._codecs[code] = self._codec_factory(*code)
        return self._codecs[code]

    def _load_cursor(self) -> _Cursor:
        try:
            state = json.loads(self.cursor_path.read_text())
            if state.get("format") != CURSOR_FORMAT:
                raise ValueError(f"cursor format {state.get('format')!r}")
            after = state.get("after")
            return _Cursor(str(after) if after is not None else None, int(state.get("passes_completed", 0)))
        except FileNotFoundError:
            return _Cursor()
        except (ValueError, TypeError, AttributeError, OSError) as exc:
            # Losing the cursor costs a re-scrub from the start, nothing more.
            log.warning("scrub: unreadable cursor %s (%s); starting over", self.cursor_path, exc)
            return _Cursor()

    def _save_cursor(self, cursor: _Cursor) -> None:
        state = {"format": CURSOR_FORMAT, "after": cursor.after, "passes_completed": cursor.passes_completed}
        # A crash leaves the old cursor or the new, never half of one.
        replace_file(self.cursor_path, json.dumps(state).encode())
