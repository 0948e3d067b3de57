"""Opening the configured volumes against what the index remembers of them.

Each volume carries a marker with its identity. The index records which
identity was seen at which path, so a disk that is not mounted (the mount
point is now an empty directory on the root filesystem) or the wrong disk is
refused and reported instead of being written into. A new, empty path is
taken into use and remembered.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from pacsvault.daemon.config import Config, TierConfig
from pacsvault.daemon.errors import InvalidInput, Unavailable, shown
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import VolumeRecord
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.local import LocalBlobAccess, has_blobs, read_marker, write_marker
from pacsvault.daemon.tiering.new_volume import checked_new_volume
from pacsvault.daemon.storage.tiered import (
    RefusedVolume,
    Tier,
    TieredBlobStore,
    Volume,
    Watermarks,
    disk_usage,
)

log = logging.getLogger(__name__)


def open_store(config: Config, env: IndexEnvironment, clock: Callable[[], float] = time.time,
               sealer: BlobSealer | None = None) -> TieredBlobStore:
    """Every configured tier with the volumes that pass their identity check."""
    known = {r.volume_id: r for r in placement.volumes(env)}
    by_path = {r.path: r for r in known.values()}
    tiers, refused = [], []
    for tier_config in config.tiers:
        tier = Tier(tier_config.name)
        for configured in tier_config.volumes:
            root = config.resolve(configured)
            try:
                volume_id = _identify(root, by_path.get(str(root)), known)
            except Unavailable as exc:
                log.error("refusing volume %s: %s", root, exc)
                refused.append(RefusedVolume(tier_config.name, str(root), str(exc)))
                continue
            record = known.get(volume_id) or VolumeRecord(volume_id=volume_id, state="active", added_at=clock())
            if record.path != str(root) or record.tier != tier_config.name:
                record.path, record.tier = str(root), tier_config.name
                placement.save_volume(env, record)
            tier.volumes.append(build_volume(config, tier_config, root, volume_id, record.state, sealer))
        tiers.append(tier)
    return TieredBlobStore(tiers, refused, sealer)


def _identify(root: Path, registered: VolumeRecord | None, known: dict[str, VolumeRecord]) -> str:
    marker = read_marker(root)
    if registered is not None:
        if marker is None:
            raise Unavailable(f"its .pacsvault-volume marker is missing (expected volume {registered.volume_id}); "
                              "is the disk mounted?")
        if marker != registered.volume_id:
            raise Unavailable(f"it holds volume {marker}, not {registered.volume_id}; the wrong disk is mounted")
        return marker
    if marker is not None:
        # A volume the index knows under another path (remounted elsewhere),
        # or one this index has not seen: either way its identity is intact.
        if marker in known:
            log.warning("volume %s moved from %s to %s", marker, known[marker].path, root)
        return marker
    if has_blobs(root):
        raise Unavailable("it holds blobs but has no .pacsvault-volume marker")
    log.info("taking new volume %s into use", root)
    return write_marker(root)


def build_volume(config: Config, tier: TierConfig, root: Path, volume_id: str, state: str = "active",
                 sealer: BlobSealer | None = None) -> Volume:
    local = LocalBlobAccess(root, volume_id)
    removed = local.clean_tmp()
    if removed:
        log.info("volume %s: removed %d unfinished writes left by a crash", root, removed)
    access = CompressingBlobAccess(
        local, level=config.storage.compression_level, frame_size=config.storage.frame_size_bytes,
        sealer=sealer, shred_on_delete=config.encryption.shred_on_delete,
    )
    return Volume(
        tier=tier.name, volume_id=volume_id, path=str(root), local=local, access=access,
        watermarks=Watermarks(tier.high_watermark, tier.low_watermark, tier.reserve_bytes),
        usage=lambda: disk_usage(root), volume_class=tier.volume_class, draining=state == "draining",
        device=os.stat(root).st_dev,
    )


def add_volume(config: Config, env: IndexEnvironment, store: TieredBlobStore, tier_name: str, path: str,
               clock: Callable[[], float] = time.time) -> Volume:
    """Takes a new volume into use while the daemon runs; it takes data at once."""
    tier = next((t for t in config.tiers if t.name == tier_name), None)
    if tier is None:
        raise InvalidInput(f"tier {shown(tier_name)} is not configured "
                           f"(tiers: {', '.join(t.name for t in config.tiers)})")
    if any(v.path == path for v in store.volumes):
        raise InvalidInput(f"{shown(path)} is already a volume")
    root = checked_new_volume(path)
    known = {r.volume_id: r for r in placement.volumes(env)}
    volume_id = _identify(root, None, known)
    record = known.get(volume_id) or VolumeRecord(volume_id=volume_id, state="active", added_at=clock())
    record.path, record.tier = str(root), tier_name
    placement.save_volume(env, record)
    volume = build_volume(config, tier, root, volume_id, record.state, store.sealer)
    store.add_volume(volume)
    log.info("volume %s added to tier %s", root, tier_name)
    return volume


def set_draining(env: IndexEnvironment, store: TieredBlobStore, volume_ref: str) -> Volume:
    """Stops new data landing on a volume; the mover then empties it."""
    volume = next((v for v in store.volumes if volume_ref in (v.volume_id, v.path)), None)
    if volume is None:
        raise InvalidInput(f"no volume {shown(volume_ref)} (give its path or id; `pacsvault tiers` lists them)")
    others = [v for v in store.volumes if v is not volume and not v.draining and not v.failed]
    if not others:
        raise InvalidInput(f"cannot drain {volume.path}: no other volume could take its data")
    record = next(r for r in placement.volumes(env) if r.volume_id == volume.volume_id)
    record.state = "draining"
    placement.save_volume(env, record)
    volume.draining = True
    return volume
