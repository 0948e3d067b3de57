"""Instances to files as they stream in: verified before they take their name, resumable."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import blake3

from pacsvault.client._messages import InstanceMessage, check_digest, safe_file_name
from pacsvault.v1 import common_pb2


@dataclass(frozen=True)
class SavedInstance:
    """One file written (or found already in place) by ``save_study`` and friends."""

    path: Path
    sop_instance_uid: str
    size_bytes: int
    # True when the file was already there with the digest the appliance sent: kept, not rewritten.
    already_present: bool = False


def check_folder(directory: Path) -> None:
    """Before any call: a folder to write into must be one (or not exist yet)."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(directory))


def check_file(path: Path) -> None:
    """Before any call: a file to write needs an existing folder and must not be one."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent))


def matches(path: Path, attributes: common_pb2.InstanceAttributes) -> bool:
    """Whether ``path`` holds exactly the bytes the appliance describes (size, then BLAKE3)."""
    try:
        if not path.is_file() or path.stat().st_size != attributes.digest.size_bytes:
            return False
        return bool(blake3.blake3().update_mmap(path).hexdigest() == attributes.digest.hash)
    except OSError:
        return False


Progress = Callable[[SavedInstance], None]


class InstanceFiles:
    """Writes the instances of one stream, each to the file ``name_of`` gives.

    Bytes go to ``<name>.part`` and the file is renamed only when they match
    the digest sent with them, so a file under its final name is always whole
    and verified. A file already in place with that digest is kept and its
    bytes are skipped: running the same retrieval again resumes it. One with
    other bytes is replaced when ``overwrite``, else FileExistsError.
    """

    def __init__(self, name_of: Callable[[common_pb2.InstanceAttributes], Path], *, overwrite: bool = True) -> None:
        self._name_of = name_of
        self._overwrite = overwrite
        self._attributes: common_pb2.InstanceAttributes | None = None
        self._final = Path()
        self._part: Path | None = None
        self._out: BinaryIO | None = None
        self._hasher = blake3.blake3()
        self._size = 0

    def feed(self, message: InstanceMessage) -> SavedInstance | None:
        """Takes one message; returns the previous instance once this one starts a new one."""
        done = None
        if message.HasField("instance"):
            done = self.finish()
            self._start(message.instance)
        if self._out is not None:
            self._out.write(message.data)
            self._hasher.update(message.data)
        self._size += len(message.data)
        return done

    def finish(self) -> SavedInstance | None:
        """Completes the current instance: verify, then rename (or confirm the file in place)."""
        attributes, part, out = self._attributes, self._part, self._out
        if attributes is None:
            return None
        self._attributes, self._part, self._out = None, None, None
        if out is None or part is None:
            return SavedInstance(self._final, attributes.sop_instance_uid, self._size, already_present=True)
        out.close()
        try:
            check_digest(attributes, self._hasher.hexdigest(), self._size)
        except Exception:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, self._final)
        return SavedInstance(self._final, attributes.sop_instance_uid, self._size)

    def abort(self) -> None:
        """Removes the unfinished instance's ``.part`` (files already completed stay)."""
        if self._out is not None:
            self._out.close()
        if self._part is not None:
            self._part.unlink(missing_ok=True)
        self._attributes, self._part, self._out = None, None, None

    def _start(self, attributes: common_pb2.InstanceAttributes) -> None:
        final = self._name_of(attributes)
        self._attributes, self._final, self._size = attributes, final, 0
        if matches(final, attributes):
            return  # already here and verified: skip its bytes
        if final.exists() and not self._overwrite:
            raise FileExistsError(errno.EEXIST, "exists with other content", str(final))
        final.parent.mkdir(parents=True, exist_ok=True)
        self._part = final.with_name(final.name + ".part")
        self._out = open(self._part, "wb")  # noqa: SIM115 - closed in finish() or abort()
        self._hasher = blake3.blake3()


def in_folder(directory: Path) -> Callable[[common_pb2.InstanceAttributes], Path]:
    """``<directory>/<SOPInstanceUID>.dcm``; the folder is made when the first instance arrives."""
    return lambda attributes: directory / safe_file_name(attributes.sop_instance_uid)
