"""In-memory twin of the local blob layer, for tests and for stacking checks."""

from __future__ import annotations

import threading

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import NotFound


class BytesReader:
    """A BlobReader over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]

    def close(self) -> None:
        pass


class MemoryBlobAccess:
    """Blobs in a dict; same contract as LocalBlobAccess, no durability."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def put(self, digest: Digest, data: bytes, *, sync: bool = True) -> int:
        with self._lock:
            self._blobs[digest.hash] = bytes(data)
            return len(data)

    def flush(self) -> None:
        pass

    def open(self, digest: Digest) -> BytesReader:
        with self._lock:
            data = self._blobs.get(digest.hash)
        if data is None:
            raise NotFound(f"blob {digest} is not stored")
        return BytesReader(data)

    def contains(self, digest: Digest) -> bool:
        with self._lock:
            return digest.hash in self._blobs

    def delete(self, digest: Digest) -> None:
        with self._lock:
            self._blobs.pop(digest.hash, None)

    def corrupt(self, digest: Digest, offset: int) -> None:
        """Flips one bit, as a failing disk would; for tests."""
        with self._lock:
            data = bytearray(self._blobs[digest.hash])
            data[offset] ^= 0x01
            self._blobs[digest.hash] = bytes(data)
