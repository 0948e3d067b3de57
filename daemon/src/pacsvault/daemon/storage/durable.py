"""The durable-write primitives every on-disk store shares, each step's reason in a comment."""

from __future__ import annotations

import os
from pathlib import Path


def write_new(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Creates ``path`` (it must not exist) holding ``data``, fsynced; the caller then renames it.

    The fsync comes before the file gets its final name: a crash must never
    leave a named file with missing contents.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


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
