"""Builds the blob stack from the configuration: the one place layers are composed."""

from __future__ import annotations

import logging
import shutil

from pacsvault.daemon.config import Config
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.local import LocalBlobAccess
from pacsvault.daemon.storage.tiered import TieredBlobStore, Volume

log = logging.getLogger(__name__)


def build_blob_store(config: Config) -> TieredBlobStore:
    """Tiered(Compressing(Local(volume)) for every volume of every tier)."""
    tiers = []
    for tier in config.tiers:
        volumes = []
        for configured in tier.paths:
            root = config.resolve(configured)
            local = LocalBlobAccess(root)
            removed = local.clean_tmp()
            if removed:
                log.info("volume %s: removed %d unfinished writes left by a crash", root, removed)
            access = CompressingBlobAccess(
                local, level=config.storage.compression_level, frame_size=config.storage.frame_size_bytes
            )
            volumes.append(Volume(
                tier=tier.name, volume_id=local.volume_id, path=str(root), access=access,
                free_bytes=lambda root=root: shutil.disk_usage(root).free,
                reserve_bytes=tier.reserve_bytes,
            ))
        tiers.append((tier.name, volumes))
    return TieredBlobStore(tiers)
