"""Locks that hold across the daemon's processes.

* ``DataDirLock``: one pacsvaultd per data dir (and per tier volume). An
  ``flock`` on a file in the directory; the lock file says who holds it, so a
  second daemon can name the running one. The supervisor's children inherit
  the lock, so it holds until the last of them has exited.
* ``BlobLocks``: the striped locks that keep ingest reusing a blob's copy and
  deletion destroying that copy from overlapping, whichever processes do them.
  POSIX record locks (one byte per stripe of one file) order processes; a
  thread lock per stripe orders the threads of one process, which record
  locks do not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pacsvault.daemon import liveness
from pacsvault.daemon.errors import ConfigError

LOCK_NAME = "pacsvaultd.lock"
VOLUME_LOCK_NAME = ".pacsvault-lock"


class DataDirLock:
    """An exclusive, cross-process lock on a directory, held while the file descriptor is open."""

    def __init__(self, directory: Path, name: str = LOCK_NAME, what: str = "data dir") -> None:
        self.path = directory / name
        self.what = what
        self.fd = -1

    def acquire(self, wait_s: float = 0.0) -> None:
        """Takes the lock or raises ConfigError naming the holder.

        ``wait_s`` covers a daemon that was just killed: its children exit a
        moment later, and only then is the lock released.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                holder = self._holder()
                if time.monotonic() >= deadline or _alive(holder.get("pid")):
                    os.close(fd)
                    raise ConfigError(
                        f"{self.what} {self.path.parent} is in use by another pacsvaultd "
                        f"({_describe(holder)}); stop it first, or give this one its own {self.what}") from None
                time.sleep(0.05)  # the holder is gone; its children are on their way out
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.time()}).encode() + b"\n", 0)
        self.fd = fd

    def inheritable(self) -> int:
        """The descriptor, made inheritable: children keep the lock until the last of them exits."""
        os.set_inheritable(self.fd, True)
        return self.fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _holder(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.path.read_text() or "{}"))
        except (OSError, ValueError):
            return {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown holder: assume it is alive rather than wait for nothing
    return liveness.running(pid)


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "holder unknown"
    since = holder.get("since")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {started}"


class BlobLocks:
    """Striped locks by blob digest, exclusive across threads and processes."""

    STRIPES = 256

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._threads = [threading.Lock() for _ in range(self.STRIPES)]

    @contextlib.contextmanager
    def holding(self, digest_hash: bytes) -> Iterator[None]:
        stripe = digest_hash[0] % self.STRIPES
        with self._threads[stripe]:
            _lock_stripe(self._fd, stripe)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, stripe)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# POSIX record locks belong to the process, not the thread: while one thread of this process
# holds a stripe another process waits for, and another thread waits for a stripe that process
# holds, the kernel sees a cycle and answers EDEADLK, though no thread holds two stripes and each
# wait would end. It is no deadlock: wait a moment and ask again (bounded, in case one ever is).
_DEADLOCK_RETRY_S = 60.0


def _lock_stripe(fd: int, stripe: int) -> None:
    deadline = time.monotonic() + _DEADLOCK_RETRY_S
    pause = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, stripe)
            return
        except OSError as exc:
            if exc.errno != errno.EDEADLK or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
