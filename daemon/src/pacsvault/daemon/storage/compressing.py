"""Compressing layer: zstd frames in the self-describing blob format."""

from __future__ import annotations

import threading

import zstandard

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage import blob_format
from pacsvault.daemon.storage.blob_access import BlobAccess, BlobReader
from pacsvault.daemon.storage.blob_format import BlobHeader, Codec


class CompressingBlobAccess:
    """Stores each blob as independent zstd frames behind a versioned header."""

    def __init__(self, inner: BlobAccess, *, level: int = 3, frame_size: int = 1 << 20) -> None:
        self._inner = inner
        self._level = level
        self._frame_size = frame_size
        # zstd contexts are not thread-safe; one per thread avoids re-creating them.
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level, write_checksum=True)
            self._local.compressor = compressor
        return compressor

    def encode(self, digest: Digest, data: bytes) -> bytes:
        """The stored form of ``data``: header, then one zstd frame per frame_size bytes."""
        compressor = self._compressor()
        view = memoryview(data)
        frames = [
            compressor.compress(view[at : at + self._frame_size])
            for at in range(0, len(data), self._frame_size)
        ]
        header = BlobHeader(Codec.ZSTD_FRAMES, digest, self._frame_size, tuple(len(f) for f in frames))
        return b"".join([header.encode(), *frames])

    def put(self, digest: Digest, data: bytes) -> int:
        if self._inner.contains(digest):
            reader = self._inner.open(digest)
            try:
                return reader.size
            finally:
                reader.close()
        return self._inner.put(digest, self.encode(digest, data))

    def open(self, digest: Digest) -> FramedReader:
        return FramedReader(self._inner.open(digest), str(digest))

    def contains(self, digest: Digest) -> bool:
        return self._inner.contains(digest)

    def delete(self, digest: Digest) -> None:
        self._inner.delete(digest)


class FramedReader:
    """Reads the original bytes of a stored blob, decompressing only the frames needed."""

    def __init__(self, stored: BlobReader, where: str) -> None:
        self._stored = stored
        self._where = where
        prefix = stored.read_at(0, blob_format.fixed_header_size())
        _, _, _, count = blob_format.decode_fixed(prefix, where)
        header_len = blob_format.fixed_header_size() + 4 * count + 4
        self.header = blob_format.decode(stored.read_at(0, header_len), where)
        self._offsets = self.header.frame_offsets()
        self._decompressor = zstandard.ZstdDecompressor()
        self._cached: tuple[int, bytes] | None = None

    @property
    def size(self) -> int:
        return self.header.digest.size_bytes

    @property
    def stored_size(self) -> int:
        return self._stored.size

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        parts = []
        while offset < end:
            index, within = divmod(offset, self.header.frame_size)
            frame = self._frame(index)
            piece = frame[within : within + (end - offset)]
            parts.append(piece)
            offset += len(piece)
        return b"".join(parts)

    def _frame(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        stored_len = self.header.frame_lengths[index]
        raw = self._stored.read_at(self._offsets[index], stored_len)
        expected = min(self.header.frame_size, self.size - index * self.header.frame_size)
        if len(raw) != stored_len:
            raise DataLoss(f"{self._where}: frame {index} truncated at rest")
        try:
            frame = self._decompressor.decompress(raw)
        except zstandard.ZstdError as exc:
            raise DataLoss(f"{self._where}: frame {index} is corrupt at rest ({exc})") from exc
        if len(frame) != expected:
            raise DataLoss(f"{self._where}: frame {index} holds {len(frame)} bytes, expected {expected}")
        self._cached = (index, frame)
        return frame

    def close(self) -> None:
        self._stored.close()
