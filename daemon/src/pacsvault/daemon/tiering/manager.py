"""Tiering as the back office runs it: the volumes, the mover, and the operators'
requests (add, drain, plan, status). Serving processes record reads, pins and
prefetches through ``tiering.reads``, in the index, where the mover finds them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.config import Config
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import VolumeRecord
from pacsvault.daemon.storage.object_volume import ObjectStoreStatus, ObjectStoreVolume
from pacsvault.daemon.storage.tiered import TieredBlobStore, Usage, Volume
from pacsvault.daemon.tiering import object_tier
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
    backend: str = "local"
    store: ObjectStoreStatus | None = None  # an object-store volume's own figures


class TieringManager:
    def __init__(self, config: Config, env: IndexEnvironment, store: TieredBlobStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.env, self.clock = config, env, clock
        self.store = store
        self.mover = TierMover(env, self.store, config, clock)
        self._pending = object_tier.PendingObjectTiers(config, env, store, clock)

    @property
    def first_tier(self) -> str:
        return self.store.tiers[0].name

    # -- operators -------------------------------------------------------------

    def add_volume(self, tier: str, path: str) -> Volume:
        return volume_ops.add_volume(self.config, self.env, self.store, tier, path, self.clock)

    def drain(self, volume_ref: str) -> Volume:
        return volume_ops.set_draining(self.env, self.store, volume_ref)

    def plan(self, limit: int) -> list[PlannedMove]:
        self.store.refresh()
        return self.mover.plan(limit)

    def check_volumes(self) -> None:
        self.store.refresh()
        for volume in self.store.volumes:
            volume.health_check()
        self._pending.retry_due()

    def status(self) -> list[VolumeStatus]:
        self.store.refresh()
        records = {r.volume_id: r for r in placement.volumes(self.env)}
        out = [self._volume_status(v, records.get(v.volume_id)) for v in self.store.volumes]
        backends = {t.name: t.backend for t in self.config.tiers}
        out += [VolumeStatus(r.tier, "", r.path, "", "refused", r.reason, 0, 0, 0, 0, 0, "", False,
                             backends.get(r.tier, "local"))
                for r in self.store.refused]
        return out

    @staticmethod
    def _volume_status(volume: Volume, record: VolumeRecord | None) -> VolumeStatus:
        try:
            usage = volume.usage()
        except OSError as exc:
            volume.fail(volume.failed or f"unreachable: {exc.strerror}")
            usage = Usage(0, 0, 0)
        state = "failed" if volume.failed else (record.state if record else "active")
        marks = volume.watermarks
        fill = usage.fill
        watermark = "above-high" if fill > marks.high else "below-low" if fill < marks.low else "between"
        reason = volume.failed or (f"no inodes left ({usage.inodes_free} free): no new blob fits, whatever the "
                                   "bytes free" if usage.out_of_inodes else "")
        return VolumeStatus(
            volume.tier, volume.volume_id, volume.path, volume.volume_class, state, reason,
            usage.usable, usage.used, usage.free, record.blob_count if record else 0,
            record.stored_bytes if record else 0, watermark, volume.accepts(0, fresh=True), volume.backend,
            volume.status() if isinstance(volume, ObjectStoreVolume) else None,
        )
