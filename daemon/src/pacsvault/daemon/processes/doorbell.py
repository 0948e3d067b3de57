"""A doorbell between processes: "there is new work", fire and forget.

A serving process that queued work for the back office (an outbox entry to
replicate) rings; the back office's loop waits on the bell with its usual
interval as the timeout, so a lost ring only costs that interval. A unix
datagram per ring, never blocking the ringer: if nobody listens, or the
listener's queue is full (it has plenty of rings already), the ring is dropped.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from pathlib import Path


class Doorbell:
    """The ringing side; cheap enough for every store."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def ring(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.sendto(b"!", self._path)

    def close(self) -> None:
        self._socket.close()


class DoorbellListener:
    """The listening side; ``wait`` returns early when rung."""

    def __init__(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        os.chmod(path, 0o600)
        self._socket.setblocking(False)

    def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for a ring; True when rung. Clears every ring queued."""
        ready, _, _ = select.select([self._socket], [], [], max(0.0, timeout))
        rung = bool(ready)
        with contextlib.suppress(BlockingIOError, OSError):
            while True:
                self._socket.recv(16)
        return rung

    def ring(self) -> None:
        """Rings this listener from inside its own process (e.g. to end a wait at shutdown).

        Never blocks: while the peer is away nobody empties the queue, and a full
        queue already ends the next wait at once.
        """
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as bell:
            bell.setblocking(False)
            bell.sendto(b"!", str(self._path))

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
