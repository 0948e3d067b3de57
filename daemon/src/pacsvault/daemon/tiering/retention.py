"""What an object-store tier must keep, blob by blob: the hook for retention and legal holds.

When the mover moves a blob into an object-store tier whose bucket has S3
Object Lock, it asks ``RetentionRules.for_blob`` and has the store keep the
object accordingly (``ObjectStoreVolume.retain``): a retention date and / or
a legal hold, so that the store refuses an early delete, even to us.

The rules come from the daemon's own retention settings, so the store's
refusal is a second line behind the daemon's: a blob the daemon may delete
is past what it asked the store to keep.

- ``[retention] min_days`` keeps each blob that many days from its ingest;
- ``held(study_uid)`` says whether a study is under a legal hold (the
  mover asks the index's hold table). A hold placed or lifted later must
  reach the objects already in the store: ``hold_study`` does that when the
  operator's call changes the hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import PacsvaultError
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.records import BlobRecord
from pacsvault.daemon.storage.object_volume import ObjectStoreVolume
from pacsvault.daemon.storage.retention import Retention
from pacsvault.daemon.storage.tiered import TieredBlobStore

log = logging.getLogger(__name__)

DAY_S = 86_400.0


class RetentionRules:
    """Retention for each blob, from a minimum age and a per-study legal hold."""

    def __init__(self, min_days: int = 0, held: Callable[[str], bool] = lambda study_uid: False,
                 mode: str = "COMPLIANCE") -> None:
        self.min_days, self.held, self.mode = min_days, held, mode

    def for_blob(self, blob: BlobRecord) -> Retention | None:
        until = blob.created_at + self.min_days * DAY_S if self.min_days > 0 and blob.created_at else None
        hold = bool(blob.study_instance_uid) and self.held(blob.study_instance_uid)
        if until is None and not hold:
            return None
        return Retention(until, hold, self.mode)


def from_config(config: Any, held: Callable[[str], bool] = lambda study_uid: False) -> RetentionRules:
    """The rules of ``config``: ``retention.min_days`` where the configuration has it, else none."""
    section = getattr(config, "retention", None)
    min_days = int(getattr(section, "min_days", 0) or 0)
    return RetentionRules(min_days, held)


def apply_hold(volume: ObjectStoreVolume, digest: Digest, on: bool) -> None:
    """Puts a legal hold on (or lifts it from) a blob's object already in the store."""
    volume.objects.set_legal_hold(digest, on)


def hold_study(catalog: Catalog, store: TieredBlobStore, study_uid: str, on: bool) -> int:
    """A hold placed (or lifted) on a study reaches its objects already in an object store with
    Object Lock; returns how many. The hold in the index is what the daemon enforces: a store
    that is away now keeps its objects as they were (logged), and later moves use the index."""
    held = 0
    for _, blob in catalog.study_instances(study_uid):
        volume = store.volume(blob.location.volume_id)
        if not isinstance(volume, ObjectStoreVolume):
            continue
        try:
            if not volume.has_object_lock():
                continue
            apply_hold(volume, Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes), on)
            held += 1
        except PacsvaultError as exc:
            log.warning("object-store tier %s: could not turn the legal hold %s on an object of study %s: %s",
                        volume.tier, "on" if on else "off", study_uid, exc)
    return held
