"""The tier mover: one bounded, rate-limited, resumable pass at a time.

A blob moves in a fixed sequence, each step safe to interrupt with SIGKILL::

    intent   record (blob, from, to) in the index      crash: undone next pass
    copy     write the stored bytes to the target       crash: target copy removed
    verify   check the copy: read it back whole, every  crash: as above
             frame authenticated. An object store's
             copy is proven instead: its header and
             frame table were checked before it was
             sent, and the store checked the upload
             against our MD5, so it is the source
    retain   an object store's Object Lock: the         crash: as above (a copy the store
             retention / legal hold the rules give      keeps under its lock stays there)
    switch   point the index at the target (one txn)    crash: source copy removed
    delete   remove the source copy (one the store
             keeps under Object Lock stays)
    done     drop the intent

At every step the index points at a complete, verified copy, and a reader
that finds no file where the index pointed searches the other volumes. A
volume that fails a transfer (an object store away) is left alone until it
answers again: the mover pauses there and goes on with the others.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pacsvault.daemon.config import Config
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import NotFound, PacsvaultError
from pacsvault.daemon.index import holds, keys, placement
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, MoveIntent, StudyRecord
from pacsvault.daemon.storage.tiered import Tier, TieredBlobStore, Volume
from pacsvault.daemon.tiering import policy, transfers
from pacsvault.daemon.tiering.transfers import Move
from pacsvault.daemon.tiering import retention as retention_rules
from pacsvault.daemon.tiering.retention import RetentionRules

log = logging.getLogger(__name__)
STEPS = ("intent", "copy", "verify", "retain", "switch", "delete", "done")
DRAIN_BATCH = 10_000
# Blobs moved together share each step's index commit; the batch bounds the
# memory held (the stored bytes are read into memory) and the work a crash redoes.
BATCH_BLOBS = 256
BATCH_BYTES = 64 * 1024 * 1024


class RateLimiter:
    """Paces bytes to at most ``rate`` a second (a simple token schedule)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self._clock, self._sleep = rate, clock, sleep
        self._next = 0.0

    def take(self, n: int) -> None:
        now = self._clock()
        self._next = max(self._next, now)
        if self._next > now:
            self._sleep(self._next - now)
        self._next += n / self.rate


@dataclass
class PlannedMove:
    study_uid: str
    from_tier: str
    to_tier: str
    bytes: int
    reason: str


@dataclass
class MoverStats:
    passes: int = 0
    blobs_moved: int = 0
    bytes_moved: int = 0
    failures: int = 0
    last_error: str = ""
    last_pass_bytes: int = 0
    last_pass_seconds: float = 0.0

    @property
    def last_rate(self) -> float:
        return self.last_pass_bytes / self.last_pass_seconds if self.last_pass_seconds else 0.0


def _batches(blobs: list[BlobRecord]) -> list[list[BlobRecord]]:
    """Groups of at most BATCH_BLOBS blobs and about BATCH_BYTES, moved with one commit per step."""
    batches: list[list[BlobRecord]] = [[]]
    size = 0
    for blob in blobs:
        if batches[-1] and (len(batches[-1]) >= BATCH_BLOBS or size + blob.stored_bytes > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(blob)
        size += blob.stored_bytes
    return [b for b in batches if b]


@dataclass
class _Budget:
    left: int

    def spend(self, n: int) -> None:
        self.left -= n


@dataclass
class TierMover:
    env: IndexEnvironment
    store: TieredBlobStore
    config: Config
    clock: Callable[[], float] = time.time
    limiter: RateLimiter | None = None
    # Called after each step of each move: tests kill the process here.
    on_step: Callable[[str, Digest], None] = lambda step, digest: None
    stats: MoverStats = field(default_factory=MoverStats)
    # What an object store must keep each blob moved into it for (Object Lock).
    retention: RetentionRules | None = None

    def __post_init__(self) -> None:
        self.catalog = Catalog(self.env)
        self.limiter = self.limiter or RateLimiter(self.config.tiering.mover_max_bytes_per_s)
        self.retention = self.retention or retention_rules.from_config(
            self.config, held=lambda study_uid: holds.is_held(self.env, study_uid))
        self._demoting: set[str] = set()
        self._rule = policy.AgeRule(self.config.tiering.demote_after_days, self.config.tiering.age_basis)

    # -- what callers ask for (through the index: any serving process may) -----

    def interrupted_count(self) -> int:
        return len(placement.move_intents(self.env))

    def pending_promotions(self) -> int:
        return placement.promotions_pending(self.env)

    def run_once(self, max_bytes: int | None = None) -> MoverStats:
        """One pass: finish interrupted moves, promote, drain, demote; bounded by bytes."""
        started, before = time.monotonic(), self.stats.bytes_moved
        budget = _Budget(max_bytes if max_bytes is not None else
                         int(self.config.tiering.mover_max_bytes_per_s * self.config.tiering.mover_interval_s))
        self.resume_interrupted()
        self._refresh_demoting()
        for step in (self._promote, self._drain, self._demote):
            if budget.left > 0:
                step(budget)
        self.stats.passes += 1
        self.stats.last_pass_bytes = self.stats.bytes_moved - before
        self.stats.last_pass_seconds = time.monotonic() - started
        return self.stats

    def plan(self, limit: int = 100) -> list[PlannedMove]:
        """What the next passes would move, in order, without moving anything."""
        planned: list[PlannedMove] = []
        first = self.store.tiers[0].name
        for study_uid in placement.promotions(self.env):
            study = placement.study(self.env, study_uid)
            if study is not None:
                for tier in study.tier_instances:
                    if tier != first:
                        planned.append(PlannedMove(study_uid, tier, first, _bytes_on(study, tier), "promotion"))
        for volume in self.store.volumes:
            if volume.draining:
                record = next((r for r in placement.volumes(self.env) if r.volume_id == volume.volume_id), None)
                if record and record.blob_count:
                    planned.append(PlannedMove(f"({record.blob_count} blobs)", volume.tier, "(elsewhere)",
                                               record.stored_bytes, f"drain {volume.path}"))
        self._refresh_demoting()
        for index, tier in enumerate(self.store.tiers[:-1]):
            for heat, reason in self._demotion_candidates(tier, limit):
                planned.append(PlannedMove(heat.study_uid, tier.name, self.store.tiers[index + 1].name,
                                           heat.bytes_on_tier, reason))
        return planned[:limit]

    # -- the three kinds of move ---------------------------------------------

    def _promote(self, budget: _Budget) -> None:
        first = self.store.tiers[0]
        if first.name in self._demoting:
            return  # the first tier is itself being freed: do not refill it
        for study_uid in placement.promotions(self.env):
            if budget.left <= 0:
                return
            if not self._room_for_study(first, study_uid, budget):
                continue
            if self._move_study(study_uid, None, [first.name], budget, same_device_ok=True):
                placement.promotion_done(self.env, study_uid)

    def _room_for_study(self, first: Tier, study_uid: str, budget: _Budget) -> bool:
        """Whether the study's blobs below the first tier fit there whole now, below its high watermark;
        studies read before it leave to make the room.

        A study is never promoted in part: half a study up pushes the tier over its high
        watermark, and the demotion that follows takes the study itself down again (promotion
        and demotion would fight for ever). One the tier could never hold is read where it is.
        """
        volumes = _one_per_device([v for v in first.volumes if v.writable()])
        fill = tier_fill(first)
        if not volumes or fill is None:
            return False  # the tier takes nothing now (a failed disk): ask again later
        need = sum(_on_disk(b.stored_bytes) for b in self._blobs_of(study_uid, None, [first.name]))
        room = _promotion_room(first, volumes)
        if need <= room:
            return True
        if need > min(fill.ceiling, sum(v.ceiling() for v in volumes)):
            placement.promotion_done(self.env, study_uid)
            log.warning("study %s is not promoted: its %d bytes below tier %s are more than that tier holds "
                        "below its high watermark; it is read from where it is", study_uid, need, first.name)
            return False
        study = placement.study(self.env, study_uid)
        if study is None:
            placement.promotion_done(self.env, study_uid)
            return False
        self._demote_colder(first, study, need - room, budget)
        return need <= _promotion_room(first, volumes)

    def _demote_colder(self, first: Tier, study: StudyRecord, wanted: int, budget: _Budget) -> None:
        """Demotes studies read before ``study`` (coldest first, pins kept) to free ``wanted`` bytes on the
        first tier; frees nothing unless enough of them would leave (a study read later stays up)."""
        now, estimated, colder = self.clock(), 0, []
        with self.env.read() as txn:
            for other in placement.coldest_studies(txn, self.env, first.name):
                # (``study`` itself stops the walk: it was read no earlier than itself.) The estimate
                # counts bytes before compression: look well past what is needed.
                if other.last_access >= study.last_access or estimated >= 16 * wanted:
                    break
                if not policy.is_pinned(_heat(other, first.name), now):
                    colder.append(other.study_instance_uid)
                    estimated += _bytes_on(other, first.name)
        targets = [t.name for t in self.store.tiers[1:]]
        chosen: list[BlobRecord] = []
        freed = 0
        for study_uid in colder:
            if freed >= wanted:
                break
            blobs = self._blobs_of(study_uid, first.name, targets)
            chosen += blobs
            freed += sum(_on_disk(b.stored_bytes) for b in blobs)
        if freed < wanted:
            return
        for batch in _batches(chosen):
            if budget.left <= 0:
                return
            self._move_blobs(batch, targets, budget, exclude=None, same_device_ok=False)

    def _drain(self, budget: _Budget) -> None:
        for volume in self.store.volumes:
            if not volume.draining:
                continue
            targets = self._drain_targets(volume)
            with self.env.read() as txn:
                # A bounded slice per pass: a volume of millions of blobs drains over many passes.
                blob_keys = list(itertools.islice(placement.volume_blob_keys(txn, self.env, volume.volume_id),
                                                  DRAIN_BATCH))
            blobs = [b for b in (placement.blob(self.env, k) for k in blob_keys) if b is not None]
            for batch in _batches(blobs):
                if budget.left <= 0:
                    return
                self._move_blobs(batch, targets, budget, exclude=volume, same_device_ok=True)
            self._mark_drained_if_empty(volume)

    def _demote(self, budget: _Budget) -> None:
        for index, tier in enumerate(self.store.tiers[:-1]):
            targets = [t.name for t in self.store.tiers[index + 1 :]]
            # The blobs of several small studies share a batch: fewer commits, more transfers in flight.
            pending: list[BlobRecord] = []
            for heat, _ in self._demotion_candidates(tier, limit=10_000):
                if budget.left <= 0:
                    return
                pending += self._blobs_of(heat.study_uid, tier.name, targets)
                *full, pending = _batches(pending) or [[]]
                for batch in full:
                    self._move_blobs(batch, targets, budget, exclude=None, same_device_ok=False)
            if pending and budget.left > 0:
                self._move_blobs(pending, targets, budget, exclude=None, same_device_ok=False)

    def _refresh_demoting(self) -> None:
        """Hysteresis: a tier starts demoting past its high watermark (or once no volume of it takes
        new data: its reserve reached first) and stops below its low one."""
        for tier in self.store.tiers:
            fill = tier_fill(tier)
            if fill is None:
                continue
            if fill.over_high or not any(v.accepts(0, fresh=True) for v in tier.volumes):
                self._demoting.add(tier.name)
            elif fill.used < fill.low * fill.capacity:
                self._demoting.discard(tier.name)

    def _demotion_candidates(self, tier: Tier, limit: int) -> list[tuple[policy.StudyHeat, str]]:
        fill = tier_fill(tier)
        if fill is None:
            return []
        now = self.clock()
        with self.env.read() as txn:
            heats = (_heat(s, tier.name) for s in placement.coldest_studies(txn, self.env, tier.name))
            chosen = []
            for item in policy.demotions(fill, heats, now, self._rule, tier.name in self._demoting):
                chosen.append(item)
                if len(chosen) >= limit:
                    break
        return chosen

    # -- moving ----------------------------------------------------------------

    def _move_study(self, study_uid: str, from_tier: str | None, to_tiers: list[str], budget: _Budget,
                    same_device_ok: bool) -> bool:
        """Moves the study's blobs on ``from_tier`` (any tier not in to_tiers if None)."""
        blobs = self._blobs_of(study_uid, from_tier, to_tiers)
        moved = 0
        for batch in _batches(blobs):
            if budget.left <= 0:
                return False
            moved += self._move_blobs(batch, to_tiers, budget, exclude=None, same_device_ok=same_device_ok)
        return moved == len(blobs)

    def _blobs_of(self, study_uid: str, from_tier: str | None, to_tiers: list[str]) -> list[BlobRecord]:
        """The study's blobs on ``from_tier`` (on any tier not in to_tiers if None)."""
        try:
            members = self.catalog.study_instances(study_uid)
        except NotFound:
            return []
        return [b for _, b in members if b.location.tier not in to_tiers
                and (from_tier is None or b.location.tier == from_tier)]

    def _move_blobs(self, blobs: list[BlobRecord], to_tiers: list[str], budget: _Budget,
                    exclude: Volume | None, same_device_ok: bool) -> int:
        """Moves a batch of blobs: one index transaction per step for the whole batch."""
        try:
            moves = self._prepare(blobs, to_tiers, exclude, same_device_ok)
            if not moves:
                return 0
            self.limiter.take(sum(len(m.raw) for m in moves))  # type: ignore[union-attr]
            try:
                switched = self._copy_verify_switch(moves)
            finally:
                for volume in {id(v): v for m in moves for v in (m.source, m.target)}.values():
                    volume.usage_changed()
        except PacsvaultError as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            log.warning("blob move failed (retried next pass): %s", exc)
            return 0
        size = sum(len(m.raw) for m in switched)
        budget.spend(size)
        self.stats.blobs_moved += len(switched)
        self.stats.bytes_moved += size
        return len(switched)

    def _prepare(self, blobs: list[BlobRecord], to_tiers: list[str], exclude: Volume | None,
                 same_device_ok: bool) -> list[Move]:
        sourced = []
        for blob in blobs:
            source = self.store.volume(blob.location.volume_id)
            if source is not None and not source.failed:
                sourced.append((blob, source, Digest(DigestFunction(blob.digest_function), blob.digest,
                                                     blob.size_bytes)))
        raws = transfers.each(sourced, transfers.read_stored, transfers.width(s for _, s, _ in sourced))
        moves: list[Move] = []
        planned: dict[str, int] = {}  # bytes already headed for each target in this batch
        for (blob, source, digest), raw in zip(sourced, raws, strict=True):
            target = self._target(to_tiers, len(raw), exclude or source,
                                  None if same_device_ok else source.device, planned)
            if target is None:
                continue
            planned[target.volume_id] = planned.get(target.volume_id, 0) + len(raw)
            moves.append(Move(blob, digest, raw, source, target))
        return moves

    def _copy_verify_switch(self, moves: list[Move]) -> list[Move]:
        """The fixed step sequence of the module docstring, for a batch."""
        now = self.clock()
        intents = [MoveIntent(
            digest_function=m.blob.digest_function, digest=m.blob.digest, from_volume_id=m.source.volume_id,
            to_volume_id=m.target.volume_id, to_tier=m.target.tier, started_at=now) for m in moves]
        placement.put_move_intents(self.env, intents)
        self._each_step("intent", moves)
        at_once = transfers.width([*(m.source for m in moves), *(m.target for m in moves)])
        transfers.each(moves, transfers.copy, at_once)
        self._each_step("copy", moves)
        transfers.each(moves, transfers.verify, at_once)
        self._each_step("verify", moves)
        transfers.each(moves, self._retain, at_once)
        self._each_step("retain", moves)
        flags = self.env.write(lambda txn: [
            placement.switch_blob(txn, self.env, _key(m.blob), m.source.volume_id, m.target.tier, m.target.volume_id)
            for m in moves])
        self._each_step("switch", moves)
        transfers.each(list(zip(moves, flags, strict=True)), transfers.delete_leftover,
                       transfers.DELETES_PER_TRANSFER * at_once)
        self._each_step("delete", moves)
        placement.drop_move_intents(self.env, intents)
        self._each_step("done", moves)
        return [m for m, switched in zip(moves, flags, strict=True) if switched]

    def _each_step(self, step: str, moves: list[Move]) -> None:
        for move in moves:
            self.on_step(step, move.digest)

    def _retain(self, move: Move) -> None:
        assert self.retention is not None
        with transfers.pausing(move.target):
            move.target.retain(move.digest, self.retention.for_blob(move.blob))

    def resume_interrupted(self) -> int:
        """Finishes or undoes every move a crash left half done; returns how many."""
        intents = placement.move_intents(self.env)
        for intent in intents:
            blob = placement.blob(self.env, keys.blob_key(intent.digest_function, intent.digest))
            digest = Digest(DigestFunction(intent.digest_function), intent.digest, blob.size_bytes if blob else 0)
            if blob is not None and blob.location.volume_id == intent.to_volume_id:
                leftover = self.store.volume(intent.from_volume_id)  # switched: the source is the leftover
            else:
                leftover = self.store.volume(intent.to_volume_id)  # not switched: the copy is
            if leftover is None or leftover.failed:
                continue  # cannot reach it now; keep the intent for a later pass
            try:
                transfers.delete_copy(leftover, digest, leftover.local.delete)
            except PacsvaultError as exc:
                log.warning("an interrupted move of blob %s is finished later: %s", digest.hex[:16], exc)
                continue
            placement.drop_move_intents(self.env, [intent])
        if intents:
            log.info("finished %d blob moves interrupted by a restart", len(intents))
        return len(intents)

    # -- helpers ---------------------------------------------------------------

    def _target(self, to_tiers: list[str], size: int, exclude: Volume | None, avoid_device: int | None,
                planned: dict[str, int]) -> Volume | None:
        for tier in self.store.tiers:
            if tier.name not in to_tiers:
                continue
            candidates = [v for v in tier.volumes if v is not exclude
                          and v.accepts(size + planned.get(v.volume_id, 0), fresh=True)
                          and (avoid_device is None or v.device != avoid_device)]
            if candidates:
                return max(candidates, key=lambda v: v.usage().free)
        return None

    def _drain_targets(self, volume: Volume) -> list[str]:
        index = self.store.tier_index(volume.tier)
        names = [t.name for t in self.store.tiers]
        return [volume.tier, *names[index + 1 :], *reversed(names[:index])]

    def _mark_drained_if_empty(self, volume: Volume) -> None:
        record = next((r for r in placement.volumes(self.env) if r.volume_id == volume.volume_id), None)
        if record is not None and record.blob_count == 0 and record.state == "draining":
            record.state = "drained"
            placement.save_volume(self.env, record)
            log.info("volume %s is drained: it holds no blobs and can be removed", volume.path)



def tier_fill(tier: Tier) -> policy.TierFill | None:
    """Usage of a tier's filesystems, each counted once, and its watermarks."""
    per_device = {}
    for volume in tier.volumes:
        if volume.failed:
            continue
        try:
            per_device[volume.device] = volume.usage()
        except OSError:
            continue
    if not per_device:
        return None
    marks = tier.volumes[0].watermarks
    return policy.TierFill(sum(u.used for u in per_device.values()), sum(u.usable for u in per_device.values()),
                           marks.high, marks.low)


def _on_disk(stored_bytes: int) -> int:
    """What a blob file takes on a filesystem: whole 4 KiB blocks."""
    return -(-stored_bytes // 4096) * 4096


def _promotion_room(first: Tier, volumes: list[Volume]) -> int:
    """Bytes a promotion may bring: what the volumes take, less the slack below the high watermark where
    the tier already counts as full (promotion must not start the demotion that would undo it)."""
    fill = tier_fill(first)
    return 0 if fill is None else min(fill.room_below_high, sum(v.room() for v in volumes))


def _one_per_device(volumes: list[Volume]) -> list[Volume]:
    """One volume of each filesystem: two volumes on one filesystem share its room."""
    return list({v.device: v for v in volumes}.values())


def _bytes_on(study: StudyRecord, tier: str) -> int:
    if not study.instance_count:
        return 0
    return study.size_bytes * study.tier_instances.get(tier, 0) // study.instance_count


def _heat(study: StudyRecord, tier: str) -> policy.StudyHeat:
    return policy.StudyHeat(study.study_instance_uid, study.last_access, study.first_stored_at, study.study_date,
                            study.pinned_until, _bytes_on(study, tier))


def _key(blob: BlobRecord) -> bytes:
    return keys.blob_key(blob.digest_function, blob.digest)
