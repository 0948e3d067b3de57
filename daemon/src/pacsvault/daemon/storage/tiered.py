"""Tiered layer: an ordered list of tiers, each of one or more volumes.

New blobs go to the first tier with room, and within a tier to the volume with
the most free space. Reads go to the volume the index names and fall back to a
search of every volume, so a blob that moved is still found.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import DataLoss, NotFound, StorageFull, Unavailable
from pacsvault.daemon.storage.blob_access import BlobAccess, BlobReader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Location:
    tier: str
    volume_id: str


@dataclass
class Volume:
    tier: str
    volume_id: str
    path: str
    access: BlobAccess
    free_bytes: Callable[[], int]
    reserve_bytes: int
    # Set when a write failed for a reason other than space; cleared on restart.
    failed: str = ""

    def room_for(self, size: int) -> bool:
        return not self.failed and self.free_bytes() - size >= self.reserve_bytes


class TieredBlobStore:
    """Places blobs across tiers and finds them wherever they are."""

    def __init__(self, tiers: list[tuple[str, list[Volume]]]) -> None:
        self._tiers = tiers
        self._by_id = {v.volume_id: v for _, volumes in tiers for v in volumes}
        self._lock = threading.Lock()

    @property
    def volumes(self) -> list[Volume]:
        return [v for _, volumes in self._tiers for v in volumes]

    def place(self, digest: Digest, data: bytes) -> tuple[Location, int]:
        """Stores ``data`` durably; returns where, and the bytes it takes at rest."""
        tried = []
        for tier, volumes in self._tiers:
            for volume in sorted(volumes, key=lambda v: v.free_bytes(), reverse=True):
                if not volume.room_for(len(data)):
                    continue
                tried.append(volume.path)
                try:
                    stored = volume.access.put(digest, data)
                except StorageFull:
                    log.warning("volume %s filled up during a write; trying the next", volume.path)
                    continue
                except Unavailable as exc:
                    volume.failed = str(exc)
                    log.error("volume %s stops taking writes: %s", volume.path, exc)
                    continue
                return Location(tier, volume.volume_id), stored
        raise StorageFull(
            f"no tier has room for a blob of {len(data)} bytes"
            + (f" (tried {', '.join(tried)})" if tried else " (every volume is past its reserve)")
        )

    def open(self, digest: Digest, hint: Location | None = None) -> BlobReader:
        first = self._by_id.get(hint.volume_id) if hint else None
        candidates = ([first] if first else []) + [v for v in self.volumes if v is not first]
        for volume in candidates:
            try:
                return volume.access.open(digest)
            except NotFound:
                continue
        raise DataLoss(f"blob {digest} is indexed but on no volume")

    def contains(self, digest: Digest) -> bool:
        return any(v.access.contains(digest) for v in self.volumes)

    def delete(self, digest: Digest) -> None:
        for volume in self.volumes:
            volume.access.delete(digest)
