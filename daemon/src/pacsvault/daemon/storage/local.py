"""Local layer: blobs as files in one volume directory, written durably.

Layout of a volume::

    <root>/.pacsvault-volume          identity marker (JSON), written at first use
    <root>/blobs/<function>/ab/cd/<hex digest>
    <root>/tmp/                       writes in progress; emptied at start-up
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path

from pacsvault.daemon import liveness
from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import NotFound, StorageFull, Unavailable
from pacsvault.daemon.storage import durable
from pacsvault.daemon.storage.durable import fsync_dir as _fsync_dir
from pacsvault.daemon.storage.durable import make_dirs as _make_dirs

MARKER_NAME = ".pacsvault-volume"


class FileReader:
    """A BlobReader over one open file; pread keeps concurrent readers independent."""

    def __init__(self, fd: int, size: int, where: str) -> None:
        self._fd = fd
        self._size = size
        self._where = where

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            # A disk returning I/O errors: the volume is unavailable, not the data lost.
            raise Unavailable(f"volume {self._where} failed a read: {exc.strerror}") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class LocalBlobAccess:
    """One volume directory holding opaque blob files."""

    def __init__(self, root: Path, volume_id: str) -> None:
        self.root = root
        self.volume_id = volume_id
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        for sub in (self._blobs, self._tmp):
            _make_dirs(sub)

    @classmethod
    def open_or_create(cls, root: Path) -> LocalBlobAccess:
        """Opens a volume by its marker, writing one at first use.

        The daemon checks markers against its index instead (see
        tiering.volumes); this is for tools and tests without an index.
        """
        volume_id = read_marker(root)
        if volume_id is None:
            if has_blobs(root):
                raise Unavailable(f"volume {root} holds blobs but has no {MARKER_NAME} marker; refusing it")
            volume_id = write_marker(root)
        return cls(root, volume_id)

    def path_of(self, digest: Digest) -> Path:
        h = digest.hex
        return self._blobs / digest.function.name.lower() / h[:2] / h[2:4] / h

    def put(self, digest: Digest, data: bytes, *, sync: bool = True) -> int:
        final = self.path_of(digest)
        # Written afresh even when a file is there: ingest puts only what no index record
        # names, so such a file is a leftover of a write a crash cut short, never to be trusted.
        # The writer's pid in the name: a process cleaning up may remove only what a dead one left.
        tmp = self._tmp / f"{digest.hex}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            self._write(tmp, final, data, sync)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"volume {self.root} is full") from exc
            raise Unavailable(f"volume {self.root} failed a write: {exc.strerror}") from exc
        return len(data)

    def _write(self, tmp: Path, final: Path, data: bytes, sync: bool) -> None:
        # 1. Write the whole blob to a temp file in this volume, so the rename
        #    below stays on one filesystem and is atomic.
        # 2. With sync: fsync the data before it gets its name, so a crash never
        #    leaves a named blob with missing contents. Without: flush() must
        #    return before anything may point at the name (ingest's group commit).
        durable.write_new(tmp, data, sync=sync)
        created = _make_dirs(final.parent)
        # 3. Atomic publish: readers see the old state or the whole blob.
        os.replace(tmp, final)
        # 4. With sync: fsync the directory (and any directory just created) so the
        #    name itself survives a crash; only then may the index point at it.
        if sync:
            for directory in [final.parent, *created]:
                _fsync_dir(directory)

    def flush(self) -> None:
        """One syncfs for every put(sync=False) so far: their data, names and new directories."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            durable.syncfs(fd)
        except OSError as exc:
            raise Unavailable(f"volume {self.root} failed to flush: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def open(self, digest: Digest) -> FileReader:
        path = self.path_of(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} is not on volume {self.root}") from exc
        except OSError as exc:
            raise Unavailable(f"volume {self.root} failed to open blob {digest.hex[:16]}: {exc.strerror}") from exc
        return FileReader(fd, os.fstat(fd).st_size, str(self.root))

    def contains(self, digest: Digest) -> bool:
        return self.path_of(digest).exists()

    def delete(self, digest: Digest) -> None:
        path = self.path_of(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def overwrite(self, digest: Digest, offset: int, data: bytes) -> None:
        """Rewrites bytes of a stored blob in place, durably (key slots: rotation and shredding only)."""
        path = self.path_of(digest)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} is not on volume {self.root}") from exc
        try:
            if os.pwrite(fd, data, offset) != len(data):
                raise Unavailable(f"volume {self.root}: short write rewriting blob {digest.hex[:16]}")
            os.fdatasync(fd)
        except OSError as exc:
            raise Unavailable(f"volume {self.root} failed a write: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def quarantine(self, digest: Digest, reason: str) -> Path | None:
        """Moves a bad blob aside with the reason beside it; corrupt data is never silently deleted."""
        path = self.path_of(digest)
        if not path.exists():
            return None
        target_dir = self.root / "quarantine"
        _make_dirs(target_dir)
        target = target_dir / f"{digest.hex}.{uuid.uuid4().hex[:8]}"
        os.replace(path, target)
        durable.write_new(target.with_suffix(target.suffix + ".reason"), (reason + "\n").encode())
        _fsync_dir(target_dir)
        _fsync_dir(path.parent)
        return target

    def clean_tmp(self) -> int:
        """Removes writes that a crash interrupted (their writer is gone); they were never acknowledged.

        The daemon's other processes may be writing here right now: a temp file
        whose writer is alive is left alone.
        """
        removed = 0
        for leftover in self._tmp.iterdir():
            if _writer_alive(leftover.name):
                continue
            leftover.unlink(missing_ok=True)
            removed += 1
        if removed:
            _fsync_dir(self._tmp)
        return removed

    def usage(self) -> shutil._ntuple_diskusage:
        return shutil.disk_usage(self.root)


def _writer_alive(name: str) -> bool:
    """Whether the process named in a temp file's name (<digest>.<pid>.<random>.tmp) still runs."""
    parts = name.split(".")
    if len(parts) != 4 or not parts[1].isdigit():
        return False  # another layout (an older version's): its writer is from before this start
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # this very process starts afresh
    return liveness.running(pid)


def read_marker(root: Path) -> str | None:
    """The volume id in ``root``'s marker, or None when there is no marker."""
    marker = root / MARKER_NAME
    try:
        return str(json.loads(marker.read_text())["volume_id"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, OSError) as exc:
        raise Unavailable(f"volume {root}: unreadable marker {marker}") from exc


def has_blobs(root: Path) -> bool:
    blobs = root / "blobs"
    return blobs.is_dir() and any(blobs.iterdir())


def write_marker(root: Path) -> str:
    """Gives ``root`` a new identity, durably; returns it."""
    _make_dirs(root)
    volume_id = uuid.uuid4().hex
    durable.replace_file(root / MARKER_NAME, (json.dumps({"volume_id": volume_id, "format": 1}) + "\n").encode())
    return volume_id
