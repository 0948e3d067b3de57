"""The one interface every blob layer implements.

A blob is an immutable byte string named by the digest of its original bytes.
Layers wrap each other (compressing over local, later verifying, replicating,
metrics); each adds one thing and keeps this contract, which
``tests/unit/test_blob_access_contract.py`` checks for every stack.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Protocol

from pacsvault.daemon.digest import Digest


class BlobReader(Protocol):
    """Random access to one stored blob."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; short only at the end."""
        ...

    def close(self) -> None: ...


class BlobAccess(Protocol):
    """Put, open, test and delete blobs by digest."""

    def put(self, digest: Digest, data: bytes, *, sync: bool = True) -> int:
        """Stores ``data`` under ``digest``; returns the bytes it takes at rest.

        Durable on return; with ``sync`` False only once ``flush`` returns, so
        that many concurrent puts share one flush (ingest's group commit).
        A copy already there (a crash's leftover, or the same bytes) is
        replaced, atomically: readers see the old copy or the new one.
        """
        ...

    def flush(self) -> None:
        """Makes every put so far durable (a no-op for layers whose puts always are)."""
        ...

    def open(self, digest: Digest) -> BlobReader:
        """Raises NotFound when absent, DataLoss when unreadable."""
        ...

    def contains(self, digest: Digest) -> bool: ...

    def delete(self, digest: Digest) -> None:
        """Removes the blob; deleting an absent blob is not an error."""
        ...


def iter_chunks(reader: BlobReader, chunk_size: int, offset: int = 0) -> Iterator[bytes]:
    """The blob's bytes from ``offset`` in chunks of at most ``chunk_size``."""
    while offset < reader.size:
        chunk = reader.read_at(offset, min(chunk_size, reader.size - offset))
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def read_all(reader: BlobReader) -> bytes:
    return b"".join(iter_chunks(reader, 1 << 20))


def authenticated(reader: BlobReader) -> bool:
    """Whether every byte ``reader`` gives was authenticated against the blob's address as it was
    read (a sealed blob's frames), so the whole need not be hashed again to be trusted."""
    return bool(getattr(reader, "authenticated", False))


class BlobFile(io.RawIOBase):
    """A seekable file view of a blob, so pydicom can read just the header."""

    def __init__(self, reader: BlobReader) -> None:
        super().__init__()
        self._reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._reader.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._reader.read_at(self._pos, len(buffer))
        n = len(data)
        memoryview(buffer)[:n] = data
        self._pos += n
        return n
