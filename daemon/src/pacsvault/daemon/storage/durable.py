"""The durable-write primitives every on-disk store shares, each step's reason in a comment."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


def write_new(path: Path, data: bytes, mode: int = 0o640, *, sync: bool = True) -> None:
    """Creates ``path`` (it must not exist) holding ``data``, fsynced; the caller then renames it.

    The fsync comes before the file gets its final name: a crash must never
    leave a named file with missing contents. ``sync=False`` is for callers
    that fsync a batch later. The mode is set at creation (the daemon's files
    are for its own user and group, never for everyone).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Gives ``path`` new contents: temp -> fsync -> rename -> fsync dir, so a crash
    leaves the old contents or the new, never half of them."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a crash before its rename: never acknowledged
    write_new(tmp, data, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def make_dirs(path: Path) -> list[Path]:
    """mkdir -p that returns the parents of what it created, to be fsynced."""
    created: list[Path] = []
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        created.append(directory.parent)
    return created


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(fd: int) -> None:
    """Writes back everything written to the filesystem holding ``fd`` (data, names, directories)
    and waits for it: one flush for a whole batch of files. Raises OSError as fsync would."""
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno() or errno.EIO
        raise OSError(code, os.strerror(code))
