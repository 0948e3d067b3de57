"""Tiering as the archive sees it: the volumes, the mover, recorded accesses,
and the operator's and clinician's requests (add, drain, pin, prefetch)."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.config import Config
from pacsvault.daemon.errors import InvalidInput, NotFound, shown
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, StudyRecord, VolumeRecord, decode, encode
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.tiered import TieredBlobStore, Usage, Volume
from pacsvault.daemon.tiering import volumes as volume_ops
from pacsvault.daemon.tiering.mover import PlannedMove, TierMover

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeStatus:
    tier: str
    volume_id: str
    path: str
    volume_class: str
    state: str  # active, draining, drained, failed, refused
    reason: str
    capacity_bytes: int
    used_bytes: int
    free_bytes: int
    blobs: int
    stored_bytes: int
    watermark: str  # below-low, between, above-high
    accepts_writes: bool


class TieringManager:
    def __init__(self, config: Config, env: IndexEnvironment, clock: Callable[[], float] = time.time,
                 sealer: BlobSealer | None = None) -> None:
        self.config, self.env, self.clock = config, env, clock
        self.store: TieredBlobStore = volume_ops.open_store(config, env, clock, sealer)
        self.mover = TierMover(env, self.store, config, clock)
        self._accesses: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def first_tier(self) -> str:
        return self.store.tiers[0].name

    # -- reads -----------------------------------------------------------------

    def note_access(self, study_uid: str, blobs: list[BlobRecord]) -> None:
        """Records a read of the study; a study read from a lower tier comes back up."""
        with self._lock:
            self._accesses[study_uid] = self.clock()
        if self.config.tiering.promote_on_access and any(b.location.tier != self.first_tier for b in blobs):
            self.mover.request_promotion(study_uid)

    def flush_accesses(self) -> int:
        """Writes recorded accesses to the index in one transaction; returns how many."""
        with self._lock:
            pending, self._accesses = self._accesses, {}
        if not pending:
            return 0

        def op(txn: lmdb.Transaction) -> None:
            for study_uid, when in pending.items():
                value = txn.get(study_uid.encode(), db=self.env.dbs["studies"])
                if value is not None:
                    study = decode(StudyRecord, value)
                    placement.touch_study(txn, self.env, study, when)
                    txn.put(study_uid.encode(), encode(study), db=self.env.dbs["studies"])

        self.env.write(op)
        return len(pending)

    # -- clinical requests -----------------------------------------------------

    def pin(self, study_uid: str, until: str) -> StudyRecord:
        """Keeps a study on the first tier until the end of ``until`` (YYYYMMDD); '' unpins."""
        if until:
            try:
                datetime.datetime.strptime(until, "%Y%m%d")
            except ValueError as exc:
                raise InvalidInput(f"until: {shown(until)} is not a date in YYYYMMDD form") from exc

        def op(txn: lmdb.Transaction) -> StudyRecord:
            value = txn.get(study_uid.encode(), db=self.env.dbs["studies"])
            if value is None:
                raise NotFound(f"no study with Study Instance UID {study_uid}")
            study = decode(StudyRecord, value)
            study.pinned_until = until
            txn.put(study_uid.encode(), encode(study), db=self.env.dbs["studies"])
            return study

        study = self.env.write(op)
        if until:
            self.mover.request_promotion(study_uid)
        return study

    def prefetch(self, studies: list[StudyRecord]) -> tuple[int, int]:
        """Queues the studies not wholly on the first tier; returns (studies, bytes) queued."""
        queued, size = 0, 0
        now = self.clock()
        for study in studies:
            below = sum(n for tier, n in study.tier_instances.items() if tier != self.first_tier)
            with self._lock:
                # Counts as a read: a prefetched study is about to be needed,
                # and must not be demoted again by an age rule meanwhile.
                self._accesses[study.study_instance_uid] = now
            if below:
                self.mover.request_promotion(study.study_instance_uid)
                queued += 1
                size += study.size_bytes * below // max(1, study.instance_count)
        return queued, size

    # -- operators -------------------------------------------------------------

    def add_volume(self, tier: str, path: str) -> Volume:
        return volume_ops.add_volume(self.config, self.env, self.store, tier, path, self.clock)

    def drain(self, volume_ref: str) -> Volume:
        return volume_ops.set_draining(self.env, self.store, volume_ref)

    def plan(self, limit: int) -> list[PlannedMove]:
        return self.mover.plan(limit)

    def check_volumes(self) -> None:
        for volume in self.store.volumes:
            volume.check_present()

    def status(self) -> list[VolumeStatus]:
        records = {r.volume_id: r for r in placement.volumes(self.env)}
        out = [self._volume_status(v, records.get(v.volume_id)) for v in self.store.volumes]
        out += [VolumeStatus(r.tier, "", r.path, "", "refused", r.reason, 0, 0, 0, 0, 0, "", False)
                for r in self.store.refused]
        return out

    @staticmethod
    def _volume_status(volume: Volume, record: VolumeRecord | None) -> VolumeStatus:
        try:
            usage = volume.usage()
        except OSError as exc:
            usage, volume.failed = Usage(0, 0, 0), volume.failed or f"unreachable: {exc.strerror}"
        state = "failed" if volume.failed else (record.state if record else "active")
        marks = volume.watermarks
        fill = usage.fill
        watermark = "above-high" if fill > marks.high else "below-low" if fill < marks.low else "between"
        return VolumeStatus(
            volume.tier, volume.volume_id, volume.path, volume.volume_class, state, volume.failed,
            usage.usable, usage.used, usage.free, record.blob_count if record else 0,
            record.stored_bytes if record else 0, watermark, volume.accepts(0),
        )
