"""Durable file primitives of the shard store, each step's reason in a comment.

The same sequence as ``storage.local`` (temp -> fsync -> rename -> fsync dir),
plus the append-and-fsync that resumable uploads need.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pacsvault.daemon.errors import StorageFull, Unavailable
from pacsvault.daemon.storage.durable import fsync_dir, make_dirs, write_new

__all__ = ["append_durably", "durable_size", "fsync_dir", "make_dirs", "unlink", "volume_error", "write_new"]

def append_durably(path: Path, offset: int, data: memoryview) -> None:
    """Writes ``data`` at ``offset`` of ``path`` (created if missing) and fsyncs it."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
        # The bytes must be on disk before the sender is told they are committed.
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)  # and the partial's name, or a crash loses it all


def durable_size(path: Path) -> int:
    """The size of ``path`` after an fsync (0 when missing): every byte counted is durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        # A writer that died between write and fsync left bytes in the page
        # cache only: fsync them now, so the size reported is a durable one.
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def unlink(path: Path) -> bool:
    """Removes ``path``; False when it was not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def volume_error(path: Path, exc: OSError) -> Exception:
    """The domain error for a failed write: full is not the same as broken."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"shard volume of {path} is full")
    return Unavailable(f"shard volume of {path} failed a write: {exc.strerror}")
