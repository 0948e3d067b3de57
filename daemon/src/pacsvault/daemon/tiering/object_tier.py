"""Object-store tiers among the volumes: registered by the back office, built by every process.

An s3 tier is one volume: its bucket and prefix at its endpoint, written as
its path (``https://objects.example/bucket/prefix/``), with its identity in a
marker object (``storage.s3_marker``) as a directory has one in a marker file.

The back office registers it at start (``register``): the bucket answers,
the marker is the one the index remembers for that place (or, at first use
of an empty prefix, a new one). What the operator must fix (credentials, a
missing bucket, a marker of another appliance) and a store that is away do
not stop the daemon: ingest never depends on the object store. A tier the
index knows is recorded as failed (every process reads it as failed, nothing
is placed there, its blobs answer UNAVAILABLE) and looked at again by the
back office until it answers; one the index does not know yet is refused and
registered as soon as the store answers (``PendingObjectTiers``).

Serving processes build their volume from the index record (``build``),
without asking the store: the back office has checked it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pacsvault.daemon.config import Config, TierConfig
from pacsvault.daemon.errors import ConfigError, Unavailable
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import VolumeRecord
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import CompressingBlobAccess
from pacsvault.daemon.storage.object_volume import BACKOFF_FIRST_S, BACKOFF_MAX_S, PROBE_S, ObjectStoreVolume
from pacsvault.daemon.storage.s3 import S3BlobAccess
from pacsvault.daemon.storage.s3_client import S3Settings, deadline
from pacsvault.daemon.storage.s3_marker import MARKER_NAME, holds_objects, read_marker, write_marker
from pacsvault.daemon.storage.tiered import RefusedVolume, TieredBlobStore, Usage, Volume, Watermarks

log = logging.getLogger(__name__)


def location_of(tier: TierConfig) -> str:
    """The tier's one volume as a path: endpoint, bucket and prefix."""
    return f"{tier.s3_endpoint.rstrip('/')}/{tier.s3_bucket}/{tier.s3_prefix}"


def settings_for(config: Config, tier: TierConfig) -> S3Settings:
    return S3Settings(
        tier.s3_endpoint, tier.s3_bucket, name=tier.name, key_prefix=f"{tier.s3_prefix}blobs/",
        quarantine_prefix=f"{tier.s3_prefix}quarantine/", region=tier.s3_region, profile=tier.s3_profile or None,
        ca_file=str(config.resolve(tier.s3_ca_file)) if tier.s3_ca_file else None, timeout_s=tier.s3_timeout_s,
        connect_timeout_s=tier.s3_connect_timeout_s, read_timeout_s=tier.s3_read_timeout_s,
        max_connections=tier.s3_max_connections, quota_bytes=tier.s3_quota_bytes)


def register(config: Config, tier: TierConfig, env: IndexEnvironment,
             clock: Callable[[], float] = time.time, adopt: bool = False) -> RefusedVolume | None:
    """Identifies the tier's bucket and records it (back office); the refusal when it cannot be used yet.

    ``adopt``: a marker this index does not know is taken as ours (an index being rebuilt from the
    blobs knows no volume yet); otherwise it is another appliance's bucket and refused."""
    location = location_of(tier)
    records = placement.volumes(env)
    known = {r.volume_id: r for r in records}
    registered = next((r for r in records if r.path == location), None)
    try:
        access = S3BlobAccess(settings_for(config, tier))
        with deadline(PROBE_S):
            access.check()
            volume_id = _identify(access, f"{tier.s3_prefix}{MARKER_NAME}", registered, known, adopt)
    except (ConfigError, Unavailable) as exc:
        if registered is None:
            log.error("object-store tier %s (%s) not taken into use: %s", tier.name, location, exc)
            return RefusedVolume(tier.name, location, str(exc))
        log.error("object-store tier %s (%s) is unusable for now: %s; nothing goes there, its blobs answer "
                  "UNAVAILABLE, and it is looked at again until it answers", tier.name, location, exc)
        _record_failed(env, registered.volume_id, str(exc))
        return None
    record = known.get(volume_id) or VolumeRecord(volume_id=volume_id, state="active", added_at=clock())
    if record.path != location or record.tier != tier.name or volume_id not in known or record.failed:
        record.path, record.tier, record.failed = location, tier.name, ""
        placement.save_volume(env, record)
    return None


class PendingObjectTiers:
    """Object-store tiers refused at start (the index knew none of them), registered as soon as their
    store answers; looked at each tiering pass, with backoff (1 s doubling to 5 minutes) per tier."""

    def __init__(self, config: Config, env: IndexEnvironment, store: TieredBlobStore,
                 clock: Callable[[], float] = time.time) -> None:
        self._config, self._env, self._store, self._clock = config, env, store, clock
        self._next: dict[str, tuple[float, float]] = {}  # tier -> (next try, backoff)

    def retry_due(self) -> None:
        for tier in self._config.tiers:
            location = location_of(tier) if tier.is_object_store else None
            refused = next((r for r in self._store.refused if r.path == location), None)
            due, backoff = self._next.get(tier.name, (0.0, 0.0))
            if refused is None or time.monotonic() < due:
                continue
            if register(self._config, tier, self._env, self._clock) is not None:
                backoff = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, backoff * 2))
                self._next[tier.name] = (time.monotonic() + backoff, backoff)
                continue
            self._next.pop(tier.name, None)
            self._store.refused.remove(refused)
            self._store.refresh()
            log.info("object-store tier %s (%s) is taken into use", tier.name, location)


def build(config: Config, tier: TierConfig, record: VolumeRecord, env: IndexEnvironment,
          sealer: BlobSealer | None, on_failure_change: Callable[[Volume], None]) -> ObjectStoreVolume:
    """The tier's volume in one process, from its index record (no request to the store)."""
    access = S3BlobAccess(settings_for(config, tier))
    quota, volume_id = tier.s3_quota_bytes, record.volume_id

    def usage() -> Usage:
        current = placement.volume(env, volume_id)
        used = current.stored_bytes if current else 0
        return Usage(quota, used, max(0, quota - used))

    return ObjectStoreVolume(
        tier=tier.name, volume_id=volume_id, path=location_of(tier), local=access,  # type: ignore[arg-type]
        access=CompressingBlobAccess(access, level=config.storage.compression_level,
                                     frame_size=config.storage.frame_size_bytes, sealer=sealer,
                                     shred_on_delete=config.encryption.shred_on_delete),
        watermarks=Watermarks(tier.high_watermark, tier.low_watermark, tier.reserve_bytes), usage=usage,
        volume_class=tier.volume_class, device=-1 - int(volume_id[:12], 16), failed=record.failed,
        draining=record.state in ("draining", "drained"), on_failure_change=on_failure_change,
        store=access, marker_key=f"{tier.s3_prefix}{MARKER_NAME}")


def _identify(access: S3BlobAccess, marker_key: str, registered: VolumeRecord | None,
              known: dict[str, VolumeRecord], adopt: bool = False) -> str:
    where = f"object store {access.label} ({access.settings.endpoint}, bucket {access.settings.bucket!r})"
    marker = read_marker(access.calls, marker_key)
    if registered is not None:
        if marker is None:
            raise Unavailable(f"{where}: its marker {marker_key} is missing (expected volume "
                              f"{registered.volume_id}): another bucket or prefix, or it was emptied")
        if marker != registered.volume_id:
            raise Unavailable(f"{where} holds volume {marker}, not {registered.volume_id}: another bucket or prefix")
        return marker
    if marker is not None:
        if marker in known:  # the same bucket under a new endpoint name
            log.warning("object-store volume %s moved from %s to %s", marker, known[marker].path, where)
            return marker
        if adopt:
            log.info("%s: volume %s adopted by the index being rebuilt", where, marker)
            return marker
        raise Unavailable(f"{where} holds volume {marker}, which this appliance's index does not know: it is "
                          "another appliance's (each appliance needs its own bucket or s3_prefix)")
    if holds_objects(access.calls, access.settings.key_prefix):
        raise Unavailable(f"{where} holds blobs under {access.settings.key_prefix} but no {marker_key} marker")
    log.info("taking %s into use as a new object-store volume", where)
    return write_marker(access.calls, marker_key)


def _record_failed(env: IndexEnvironment, volume_id: str, reason: str) -> None:
    def change(record: VolumeRecord) -> bool:
        if record.failed == reason:
            return False
        record.failed = reason
        return True

    placement.update_volume(env, volume_id, change)


def is_directory(volume: Volume) -> bool:
    """A volume on this appliance's filesystems (disk health, locks, tmp clean-up apply)."""
    return volume.backend == "local"
