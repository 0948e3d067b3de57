"""Tiered layer: an ordered list of tiers, each of one or more volumes.

New blobs go to the first tier with a volume below its high watermark, and
within a tier to the volume with the most free space. Reads go to the volume
the index names and fall back to a search of every volume, so a blob that
moved is still found. Volumes can be added and drained while the daemon runs.

Every serving process has its own store over the same volumes. What one of
them learns about a volume (it failed, it is draining, a new one was added)
the others must learn too: a volume reports a change of its ``failed`` state
to ``on_failure_change`` (which the tiering layer records in the index), and
``refresh`` (called at the start of each placement and read) brings this
store's view up to date when the index says the volumes changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

from pacsvault.daemon.digest import Digest, address_of
from pacsvault.daemon.errors import DataLoss, NotFound, StorageFull, Unavailable
from pacsvault.daemon.storage.blob_access import BlobAccess, BlobReader
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.local import LocalBlobAccess, read_marker
from pacsvault.daemon.storage.retention import Retention

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Location:
    tier: str
    volume_id: str


@dataclass(frozen=True, slots=True)
class Placed:
    """Where ``place`` put a blob, what it takes at rest, and what makes it durable (with sync=False)."""

    location: Location
    stored_bytes: int
    flush: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Usage:
    total: int
    used: int
    free: int
    # Files the daemon may still create there; -1 where the filesystem does not count them.
    inodes_free: int = -1

    @property
    def out_of_inodes(self) -> bool:
        """Too few inodes left for a blob (its file and up to two new directories), whatever the bytes."""
        return 0 <= self.inodes_free < MIN_FREE_INODES

    @property
    def usable(self) -> int:
        """Used plus free to us: the blocks reserved for root never count, as in df."""
        return self.used + self.free

    @property
    def fill(self) -> float:
        return self.used / self.usable if self.usable else 1.0


def disk_usage(path: Path) -> Usage:
    st = os.statvfs(path)  # shutil.disk_usage's figures, and the inodes it leaves out
    return Usage(st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize,
                 st.f_favail if st.f_files else -1)


# A volume with fewer free inodes takes no new blobs: stores would fail there however many bytes are free.
MIN_FREE_INODES = 64


MARKER_GONE = "its .pacsvault-volume marker is gone (unmounted or replaced?)"
# How old a volume's measured usage may be when placement decides (see Volume.recent_usage).
USAGE_TTL_S = 0.5


@dataclass(frozen=True, slots=True)
class Watermarks:
    high: float = 0.85
    low: float = 0.70
    reserve_bytes: int = 0


@dataclass
class Volume:
    """One directory of blobs, with what decides whether it takes new data.

    An object-store tier's bucket is a volume too (``object_volume``): it
    overrides the methods below the fields that touch a filesystem.
    """

    # "local" (a directory) or "s3" (a bucket of an object store).
    backend: ClassVar[str] = "local"

    tier: str
    volume_id: str
    path: str
    local: LocalBlobAccess  # the stored form, which the mover copies as it is (objects, for a bucket)
    access: BlobAccess  # what ingest and reads use (compressing over local)
    watermarks: Watermarks
    usage: Callable[[], Usage]
    volume_class: str = "hdd"
    # st_dev of the filesystem: moving between volumes on one filesystem frees nothing.
    device: int = 0
    # Why the volume takes no writes: I/O errors, disappearance, failing disk.
    # Change it with fail() / recover(), so every process hears of it.
    failed: str = ""
    draining: bool = False
    # Told when fail() or recover() changed ``failed`` (the tiering layer records it in the index).
    on_failure_change: Callable[[Volume], None] = field(default=lambda volume: None, repr=False)
    # statvfs at most every USAGE_TTL_S; bytes placed since are added (see room_for).
    _measured: tuple[float, Usage] | None = field(default=None, repr=False)
    _placed_since: int = field(default=0, repr=False)

    def fail(self, reason: str) -> None:
        """Stops new data landing here, in this process and (through the index) every other."""
        if self.failed != reason:
            self.failed = reason
            self.on_failure_change(self)

    def recover(self, reason: str | None = None) -> None:
        """Takes writes again; with ``reason``, only if that is still why it stopped."""
        if self.failed and (reason is None or self.failed == reason):
            self.failed = ""
            self.on_failure_change(self)

    def accepts(self, size: int, *, fresh: bool = False) -> bool:
        """Writable, with room for ``size`` more bytes below the high watermark and the reserve.

        ``fresh``: measure now (the mover, which frees and fills volumes faster than ingest's
        short-lived measurement notices), rather than within USAGE_TTL_S.
        """
        return self.writable() and self.room_for(size, fresh=fresh)

    def writable(self) -> bool:
        return not self.failed and not self.draining and self.still_mounted()

    def room_for(self, size: int, *, fresh: bool = False) -> bool:
        try:
            usage = self.usage() if fresh else self.recent_usage()
        except OSError:
            return False
        return size <= self._room(usage)

    def room(self) -> int:
        """Bytes it takes now, measured afresh, before its high watermark or its reserve."""
        if not self.writable():
            return 0
        try:
            return max(0, self._room(self.usage()))
        except OSError:
            return 0

    def ceiling(self) -> int:
        """Bytes of blobs it could ever hold below its high watermark and reserve (were it empty)."""
        try:
            usage = self.usage()
        except OSError:
            return 0
        return max(0, self._room(Usage(usage.total, 0, usage.usable)))

    def _room(self, usage: Usage) -> int:
        if usage.out_of_inodes:
            return -1
        return min(int(self.watermarks.high * usage.usable) - usage.used, usage.free - self.watermarks.reserve_bytes)

    def recent_usage(self) -> Usage:
        """Usage measured at most USAGE_TTL_S ago, plus what this process placed since.

        A statvfs per blob placed cost more than the rest of placement; the
        reserve covers what other processes wrote within the window.
        """
        now = time.monotonic()
        if self._measured is None or now - self._measured[0] > USAGE_TTL_S:
            self._measured, self._placed_since = (now, self.usage()), 0
        measured = self._measured[1]
        placed = min(self._placed_since, measured.free)
        return Usage(measured.total, measured.used + placed, measured.free - placed, measured.inodes_free)

    def placed(self, size: int) -> None:
        self._placed_since += size

    def usage_changed(self) -> None:
        """Bytes came or went outside placement (the mover): measure afresh at the next decision."""
        self._measured = None

    def still_mounted(self) -> bool:
        """One stat: the directory is still on the filesystem it was opened on.

        An unmounted disk leaves its mount point on the parent filesystem,
        whose device differs; writing there would fill the root disk with
        blobs nobody can find after the next mount.
        """
        try:
            same = os.stat(self.path).st_dev == self.device
        except OSError:
            same = False
        if not same:
            self.check_present()
        return same

    def health_check(self) -> bool:
        """The back office's periodic look at the volume: for a directory, its marker."""
        return self.check_present()

    def read_failed(self, exc: Unavailable) -> None:
        """A read met an error of the volume: a disk returning I/O errors takes no more writes."""
        if not self.failed:
            self.fail(str(exc))
            log.error("volume %s stops taking writes: %s", self.path, exc)

    # -- what the mover asks of a volume it moves blobs into ------------------------------------

    def transfers_at_once(self) -> int:
        """Blobs the mover may copy here at once (a disk: one; it is the fsyncs that take the time)."""
        return 1

    def copy_in(self, digest: Digest, stored: bytes) -> bool:
        """Writes a stored form durably; True when the write itself proved the copy is these bytes
        (nothing proves it on a disk: verify_copy reads it back)."""
        self.local.put(digest, stored)
        return False

    def verify_copy(self, digest: Digest, stored: bytes, proven: bool) -> None:
        """DataLoss unless the copy here opens, authenticates and matches its address."""
        self.access.verify(digest)  # type: ignore[attr-defined]

    def transfer_failed(self, exc: Unavailable) -> None:
        """A copy into or out of this volume failed; for a directory, its own checks decide what that means."""

    def retain(self, digest: Digest, retention: Retention | None) -> None:
        """Makes the volume itself refuse an early delete where it can (an object store's Object
        Lock); a directory cannot."""

    def check_present(self) -> bool:
        """Whether the volume's marker is still there; marks it failed if not."""
        try:
            present = read_marker(Path(self.path)) == self.volume_id
            present = present and os.stat(self.path).st_dev == self.device
        except (Unavailable, OSError):
            present = False
        if not present and not self.failed:
            self.fail(MARKER_GONE)
            log.error("volume %s: %s; no more writes to it", self.path, self.failed)
        return present


@dataclass
class RefusedVolume:
    """A configured volume the daemon will not touch, and why."""

    tier: str
    path: str
    reason: str


@dataclass
class Tier:
    name: str
    volumes: list[Volume] = field(default_factory=list)


class TieredBlobStore:
    """Places blobs across tiers and finds them wherever they are."""

    def __init__(self, tiers: list[Tier], refused: list[RefusedVolume] | None = None,
                 sealer: BlobSealer | None = None) -> None:
        self.tiers = tiers
        self.refused = refused or []
        # Seals every blob written (None: encryption at rest is off).
        self.sealer = sealer
        self._lock = threading.Lock()
        # Brings the volumes up to date with what other processes changed (set by the tiering layer).
        self.refresh: Callable[[], None] = lambda: None

    @property
    def volumes(self) -> list[Volume]:
        with self._lock:
            return [v for tier in self.tiers for v in tier.volumes]

    def volume(self, volume_id: str) -> Volume | None:
        return next((v for v in self.volumes if v.volume_id == volume_id), None)

    def tier_index(self, name: str) -> int:
        return next(i for i, tier in enumerate(self.tiers) if tier.name == name)

    def add_volume(self, volume: Volume) -> None:
        with self._lock:
            tier = next(t for t in self.tiers if t.name == volume.tier)
            tier.volumes.append(volume)

    def place(self, digest: Digest, data: bytes, tiers: list[str] | None = None, *, sync: bool = True) -> Placed:
        """Stores ``data``; returns where, the bytes it takes at rest, and its volume's flush.

        Durable on return, or with ``sync`` False once the returned ``flush``
        has run (ingest runs it once for a batch, before the index commit).
        ``tiers`` limits the choice (the mover uses it); by default every tier
        is tried in order.
        """
        self.refresh()
        tried = []
        for tier in self.tiers:
            if tiers is not None and tier.name not in tiers:
                continue
            for volume in sorted(tier.volumes, key=_free_bytes, reverse=True):
                if not volume.writable() or not volume.room_for(len(data)):
                    continue
                tried.append(volume.path)
                stored = self._put(volume, digest, data, sync)
                if stored is not None:
                    volume.placed(stored)
                    return Placed(Location(tier.name, volume.volume_id), stored, volume.access.flush)
        raise StorageFull(
            f"no tier has room for a blob of {len(data)} bytes"
            + (f" (tried {', '.join(tried)})" if tried else " (every volume is past its high watermark or reserve)")
        )

    @staticmethod
    def _put(volume: Volume, digest: Digest, data: bytes, sync: bool) -> int | None:
        try:
            return volume.access.put(digest, data, sync=sync)
        except StorageFull:
            log.warning("volume %s filled up during a write; trying the next", volume.path)
        except Unavailable as exc:
            volume.fail(str(exc))
            log.error("volume %s stops taking writes: %s", volume.path, exc)
        return None

    def address(self, data: bytes | bytearray | memoryview) -> Digest:
        """The address ``data`` is stored under (keyed BLAKE3 when sealing)."""
        return address_of(data, self.sealer.address_key if self.sealer else None)

    def open(self, digest: Digest, hint: Location | None = None, *, stored: bool = False) -> BlobReader:
        """Opens the blob's original bytes, or with ``stored`` its form at rest (still sealed);
        UNAVAILABLE when the only volume that could hold it is gone."""
        self.refresh()
        first = self.volume(hint.volume_id) if hint else None
        candidates = ([first] if first else []) + [v for v in self.volumes if v is not first]
        failures: list[Unavailable] = []
        for volume in candidates:
            try:
                return volume.local.open(digest) if stored else volume.access.open(digest)
            except NotFound:
                continue
            except Unavailable as exc:
                volume.read_failed(exc)
                failures.append(exc)
        if failures:
            raise Unavailable(f"blob {digest.hex[:16]} could not be read: {failures[0]}")
        if hint is not None:
            self._raise_if_volume_gone(digest, hint)
        raise DataLoss(f"blob {digest} is indexed but on no volume")

    def _raise_if_volume_gone(self, digest: Digest, hint: Location) -> None:
        volume = self.volume(hint.volume_id)
        if volume is not None and not volume.check_present():
            raise Unavailable(f"blob {digest.hex[:16]} is on volume {volume.path}, which is unavailable: {volume.failed}")
        refused = [r for r in self.refused if r.tier == hint.tier]
        if volume is None:
            where = f" ({'; '.join(f'{r.path}: {r.reason}' for r in refused)})" if refused else ""
            raise Unavailable(f"blob {digest.hex[:16]} is on volume {hint.volume_id}, which is not mounted or refused{where}")

    def contains(self, digest: Digest) -> bool:
        return any(v.access.contains(digest) for v in self.volumes)


def _free_bytes(volume: Volume) -> int:
    try:
        return volume.recent_usage().free
    except OSError:
        return -1
