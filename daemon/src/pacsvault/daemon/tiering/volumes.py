"""Opening the volumes against what the index remembers of them, in every process.

Each volume carries a marker with its identity. The index records which
identity was seen at which path, so a disk that is not mounted (the mount
point is now an empty directory on the root filesystem) or the wrong disk is
refused and reported instead of being written into. A new, empty path is
taken into use and remembered.

The index's volume records are the one list every process works from: the
back office registers the configured volumes at start (``register_configured``)
and those added or drained while running; every serving process builds its
store from the records (``VolumeSync``) and follows their changes. A volume
that one process finds failing is recorded there too, so the others stop
writing to it on their next call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pacsvault.daemon.config import Config, TierConfig
from pacsvault.daemon.errors import ConfigError, InvalidInput, Unavailable, shown
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import VolumeRecord
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.local import LocalBlobAccess, has_blobs, read_marker, write_marker
from pacsvault.daemon.tiering import object_tier
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


def register_configured(config: Config, env: IndexEnvironment,
                        clock: Callable[[], float] = time.time, rebuilding: bool = False) -> list[RefusedVolume]:
    """Identifies every configured volume and records it in the index (back office, at start).

    Returns the volumes refused, with why. Unfinished writes a crash left are
    removed here, before any serving process starts writing. ``rebuilding``: the
    index is being rebuilt from the blobs, so an object store's marker it does not
    know is adopted (a directory volume's always is: its disk is in this appliance).
    """
    known = {r.volume_id: r for r in placement.volumes(env)}
    # A drained volume's path may hold its replacement now (a new disk, a new identity).
    by_path = {r.path: r for r in known.values() if r.state != "drained"}
    refused = []
    for tier_config in config.tiers:
        if tier_config.is_object_store:
            refusal = object_tier.register(config, tier_config, env, clock, adopt=rebuilding)
            refused += [refusal] if refusal else []
            continue
        for configured in tier_config.volumes:
            root = config.resolve(configured)
            try:
                volume_id = _identify(root, by_path.get(str(root)), known)
            except Unavailable as exc:
                log.error("refusing volume %s: %s", root, exc)
                refused.append(RefusedVolume(tier_config.name, str(root), str(exc)))
                continue
            record = known.get(volume_id) or VolumeRecord(volume_id=volume_id, state="active", added_at=clock())
            if record.path != str(root) or record.tier != tier_config.name or volume_id not in known:
                record.path, record.tier = str(root), tier_config.name
                placement.save_volume(env, record)
                known[volume_id] = record
    buckets = {object_tier.location_of(t) for t in config.tiers if t.is_object_store}
    for record in known.values():
        if record.path not in buckets:
            _clean_tmp(Path(record.path), record.volume_id)
    return refused


def open_store(config: Config, env: IndexEnvironment, sealer: BlobSealer | None = None,
               refused: list[RefusedVolume] | None = None) -> TieredBlobStore:
    """The store of one process over the recorded volumes, following their changes from then on."""
    store = TieredBlobStore([Tier(t.name) for t in config.tiers], refused, sealer)
    sync = VolumeSync(config, env, store)
    sync.sync(force=True)
    store.refresh = sync.sync
    return store


class VolumeSync:
    """Keeps one process's store in step with the index's volume records."""

    def __init__(self, config: Config, env: IndexEnvironment, store: TieredBlobStore) -> None:
        self._config, self._env, self._store = config, env, store
        self._generation = -1
        self._lock = threading.Lock()

    def sync(self, force: bool = False) -> None:
        """One index read when nothing changed; otherwise applies the changes to the store."""
        if not force and placement.volumes_generation(self._env) == self._generation:
            return
        with self._lock:
            generation, records = placement.volumes_with_generation(self._env)
            if generation == self._generation and not force:
                return
            for record in records:
                self._apply(record)
            self._generation = generation

    def _apply(self, record: VolumeRecord) -> None:
        volume = self._store.volume(record.volume_id)
        if volume is not None and volume.path == record.path:
            if volume.failed and not record.failed:
                volume.device = _device(record.path, volume.device)  # re-admitted: perhaps a new mount
            volume.failed, volume.draining = record.failed, record.state in ("draining", "drained", "rebuilding")
            return
        tier = next((t for t in self._config.tiers if t.name == record.tier), None)
        if tier is None or record.state == "drained":
            return
        if tier.is_object_store:
            self._apply_object_store(tier, record)
            return
        root = Path(record.path)
        try:
            present = read_marker(root) == record.volume_id
        except Unavailable:
            present = False
        if not present:
            return  # not mounted, or another disk: its blobs read as unavailable, nothing lands there
        self._store.add_volume(build_volume(self._config, tier, root, record, self._store.sealer,
                                            on_failure_change=self._record_failure))

    def _apply_object_store(self, tier: TierConfig, record: VolumeRecord) -> None:
        if record.path != object_tier.location_of(tier):
            return  # a bucket no longer configured: its blobs read as unavailable
        try:
            volume = object_tier.build(self._config, tier, record, self._env, self._store.sealer,
                                       self._record_failure)
        except ConfigError as exc:  # no credentials in this process: its reads of the tier fail
            log.error("object-store tier %s not opened: %s", tier.name, exc)
            return
        self._store.add_volume(volume)

    def _record_failure(self, volume: Volume) -> None:
        reason = volume.failed

        def change(record: VolumeRecord) -> bool:
            if record.failed == reason:
                return False
            record.failed = reason
            return True

        try:
            placement.update_volume(self._env, volume.volume_id, change)
        except Exception:  # noqa: BLE001 - this process has stopped using it; the others learn at their next error
            log.exception("volume %s: could not record its state in the index", volume.path)


def _device(path: str, fallback: int) -> int:
    try:
        return os.stat(path).st_dev
    except OSError:
        return fallback


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


def _clean_tmp(root: Path, volume_id: str) -> None:
    try:
        if read_marker(root) != volume_id:
            return
        removed = LocalBlobAccess(root, volume_id).clean_tmp()
    except (Unavailable, OSError):
        return
    if removed:
        log.info("volume %s: removed %d unfinished writes left by a crash", root, removed)


def build_volume(config: Config, tier: TierConfig, root: Path, record: VolumeRecord,
                 sealer: BlobSealer | None = None,
                 on_failure_change: Callable[[Volume], None] = lambda volume: None) -> Volume:
    local = LocalBlobAccess(root, record.volume_id)
    access = CompressingBlobAccess(
        local, level=config.storage.compression_level, frame_size=config.storage.frame_size_bytes,
        sealer=sealer, shred_on_delete=config.encryption.shred_on_delete,
    )
    return Volume(
        tier=tier.name, volume_id=record.volume_id, path=str(root), local=local, access=access,
        watermarks=Watermarks(tier.high_watermark, tier.low_watermark, tier.reserve_bytes),
        usage=lambda: disk_usage(root), volume_class=tier.volume_class,
        draining=record.state in ("draining", "drained", "rebuilding"), device=os.stat(root).st_dev,
        failed=record.failed,
        on_failure_change=on_failure_change,
    )


def add_volume(config: Config, env: IndexEnvironment, store: TieredBlobStore, tier_name: str, path: str,
               clock: Callable[[], float] = time.time) -> Volume:
    """Takes a new volume into use while the daemon runs; every process writes to it from its next call."""
    tier = next((t for t in config.tiers if t.name == tier_name), None)
    if tier is None:
        raise InvalidInput(f"tier {shown(tier_name)} is not configured "
                           f"(tiers: {', '.join(t.name for t in config.tiers)})")
    if tier.is_object_store:
        raise InvalidInput(f"tier {shown(tier_name)} is an object-store tier: its bucket is its one volume, "
                           "set in the config file")
    store.refresh()
    if any(v.path == path for v in store.volumes):
        raise InvalidInput(f"{shown(path)} is already a volume")
    root = checked_new_volume(path)
    known = {r.volume_id: r for r in placement.volumes(env)}
    volume_id = _identify(root, None, known)
    record = known.get(volume_id) or VolumeRecord(volume_id=volume_id, state="active", added_at=clock())
    record.path, record.tier = str(root), tier_name
    if record.state == "drained":
        record.state = "active"
    placement.save_volume(env, record)
    store.refresh()
    volume = store.volume(volume_id)
    if volume is None:
        raise Unavailable(f"volume {root} was recorded but could not be opened")
    log.info("volume %s added to tier %s", root, tier_name)
    return volume


def set_draining(env: IndexEnvironment, store: TieredBlobStore, volume_ref: str) -> Volume:
    """Stops new data landing on a volume, in every process; the mover then empties it."""
    store.refresh()
    volume = next((v for v in store.volumes if volume_ref in (v.volume_id, v.path)), None)
    if volume is None:
        raise InvalidInput(f"no volume {shown(volume_ref)} (give its path or id; `pacsvault tiers` lists them)")
    others = [v for v in store.volumes if v is not volume and not v.draining and not v.failed]
    if not others:
        raise InvalidInput(f"cannot drain {volume.path}: no other volume could take its data")

    def change(record: VolumeRecord) -> bool:
        record.state = "draining"
        return True

    placement.update_volume(env, volume.volume_id, change)
    store.refresh()
    return volume
