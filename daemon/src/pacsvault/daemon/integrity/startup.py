"""The back office's start-up look at the index: damaged, or lost while the blobs are there.

A daemon that opened an empty index beside volumes full of blobs would
serve an empty archive and treat every blob as an orphan (this is what an
index deleted or restored from the wrong backup looked like: HEALTHY, 0
instances). It refuses instead and names the command that rebuilds the index
from the blobs; so it does for an index it cannot read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lmdb

from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.file_check import REBUILD_HINT, IndexDamaged, walk
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.storage.local import has_blobs, read_marker

log = logging.getLogger(__name__)


def open_index(config: Config, keys: ApplianceKeys | None) -> IndexEnvironment:
    """The index, opened and (``index.verify_on_start``) walked; IndexDamaged when it cannot be used."""
    path = config.resolve(config.index.path)
    try:
        index = IndexEnvironment(path, map_size=config.index.map_size_bytes, max_batch=config.index.max_batch,
                                 keys=keys, reserve_percent=config.index.reserve_percent)
    except lmdb.Error as exc:
        raise IndexDamaged(f"the index at {path} cannot be opened ({exc}); {REBUILD_HINT}") from exc
    try:
        if config.index.verify_on_start:
            started = time.monotonic()
            entries = walk(index.env, index.dbs)
            log.info("index checked: %d entries in %.1fs", entries, time.monotonic() - started)
        refuse_if_lost(config, index)
    except BaseException:
        index.close()
        raise
    return index


def refuse_if_lost(config: Config, index: IndexEnvironment) -> None:
    """An index that knows no volume, beside configured volumes that carry a marker and blobs,
    lost its contents (a new data dir has no markers yet): refused, naming the command."""
    if placement.volumes(index):
        return
    full = [str(root) for root in _configured_volumes(config) if _marked_with_blobs(root)]
    if full:
        raise IndexDamaged(
            f"the index at {config.resolve(config.index.path)} is empty, but the volumes {', '.join(full)} hold "
            f"blobs: the index was lost or replaced. Nothing was changed; {REBUILD_HINT}")


def _configured_volumes(config: Config) -> list[Path]:
    return [config.resolve(path) for tier in config.tiers for path in tier.volumes]


def _marked_with_blobs(root: Path) -> bool:
    try:
        return read_marker(root) is not None and has_blobs(root)
    except (Unavailable, OSError):
        return False
