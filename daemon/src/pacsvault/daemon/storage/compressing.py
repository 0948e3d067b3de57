"""Compressing (and sealing) layer: zstd frames in the self-describing blob format."""

from __future__ import annotations

import threading

import blake3
import zstandard

from pacsvault.daemon.crypto.sealing import TAG_BYTES, BlobCipher
from pacsvault.daemon.digest import Digest, address_of
from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage import blob_format
from pacsvault.daemon.storage.blob_access import BlobAccess, BlobReader, iter_chunks
from pacsvault.daemon.storage.blob_format import SLOT_BYTES, BlobHeader, Codec
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.memory import BytesReader

# A first frame that zstd shrinks by less than this is taken as already
# compressed (JPEG, JPEG 2000, deflated pixel data): a sealed blob is then
# stored without zstd, which saves its compression at ingest and its
# decompression at every read. Only sealed: unsealed frames rely on zstd's
# checksum to catch a flipped bit, sealed ones on GCM.
_WORTH_COMPRESSING = 0.97


class CompressingBlobAccess:
    """Stores each blob as independent frames behind a versioned header, sealed when a sealer is given."""

    def __init__(self, inner: BlobAccess, *, level: int = 3, frame_size: int = 1 << 20,
                 sealer: BlobSealer | None = None, shred_on_delete: bool = True) -> None:
        self._inner = inner
        self._level = level
        self._frame_size = frame_size
        self.sealer = sealer
        self._shred = shred_on_delete
        # zstd contexts are not thread-safe; one per thread avoids re-creating them.
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level, write_checksum=True)
            self._local.compressor = compressor
        return compressor

    def address(self, data: bytes | bytearray | memoryview) -> Digest:
        """The address ``data`` is stored under: its BLAKE3, keyed when sealing."""
        return address_of(data, self.sealer.address_key if self.sealer else None)

    def encode(self, digest: Digest, data: bytes) -> bytes:
        """The stored form of ``data``: header, then one frame per frame_size bytes."""
        view = memoryview(data)
        pieces = [view[at : at + self._frame_size] for at in range(0, len(data), self._frame_size)]
        # Views, not copies: sealing and the final join read them directly.
        codec, frames = Codec.IDENTITY, pieces
        if pieces:
            compressor = self._compressor()
            first = compressor.compress(pieces[0])
            if self.sealer is None or len(first) < _WORTH_COMPRESSING * len(pieces[0]):
                codec, frames = Codec.ZSTD_FRAMES, [first, *(compressor.compress(p) for p in pieces[1:])]
        if self.sealer is None:
            header = BlobHeader(codec, digest, self._frame_size, tuple(len(f) for f in frames))
            return b"".join([header.encode(), *frames])
        header = BlobHeader(codec, digest, self._frame_size, tuple(len(f) + TAG_BYTES for f in frames), sealed=True)
        cipher = BlobCipher.fresh()
        sealed = [cipher.seal_frame(i, f, header.frame_aad(i)) for i, f in enumerate(frames)]
        slot = self.sealer.wrap(cipher.dek, digest.hash, generation=1)
        return b"".join([header.encode((slot,)), *sealed])

    def put(self, digest: Digest, data: bytes, *, sync: bool = True) -> int:
        return self._inner.put(digest, self.encode(digest, data), sync=sync)

    def flush(self) -> None:
        self._inner.flush()

    def open(self, digest: Digest) -> FramedReader:
        reader = FramedReader(self._inner.open(digest), str(digest), self.sealer)
        if reader.header.digest.hash != digest.hash:
            # A sealed blob's frames authenticate against the address in its own header: without
            # this, another blob's intact file put in this one's place would read as this one.
            reader.close()
            raise DataLoss(f"{digest}: the file holds blob {reader.header.digest.hex[:16]}, not this one")
        return reader

    def contains(self, digest: Digest) -> bool:
        return self._inner.contains(digest)

    def verify(self, digest: Digest) -> None:
        """Reads the whole blob (every frame authenticated) and checks it against its address."""
        self._verify_reader(digest, self.open(digest))

    def verify_stored(self, digest: Digest, stored: bytes) -> None:
        """Checks a stored form held in memory as verify() checks one at rest."""
        self._verify_reader(digest, FramedReader(BytesReader(stored), str(digest), self.sealer))

    def check_structure(self, digest: Digest, stored: bytes) -> None:
        """The cheap check of a stored form: its header (CRC) names ``digest``, its frame table
        accounts for every byte, and (sealed) a key slot opens with our keyring. The frames
        themselves are authenticated at every read (and by the scrub)."""
        where = str(digest)
        reader = FramedReader(BytesReader(stored), where, self.sealer)  # header, CRC, key slot
        header = reader.header
        if header.digest.hash != digest.hash or header.digest.size_bytes != digest.size_bytes:
            raise DataLoss(f"blob {digest.hex[:16]}: its header names another blob ({header.digest})")
        if header.encoded_size + sum(header.frame_lengths) != len(stored):
            raise DataLoss(f"blob {digest.hex[:16]}: {len(stored)} bytes, its frame table says "
                           f"{header.encoded_size + sum(header.frame_lengths)}")

    def _verify_reader(self, digest: Digest, reader: FramedReader) -> None:
        try:
            hasher = _hasher_for(self, reader.header)
            for chunk in iter_chunks(reader, self._frame_size):
                hasher.update(chunk)
        finally:
            reader.close()
        if hasher.digest() != digest.hash:
            raise DataLoss(f"blob {digest.hex[:16]} does not match its address")

    def delete(self, digest: Digest) -> None:
        # A store whose rewrites leave the old bytes to a garbage collector (an object store)
        # gains nothing from a shred before the delete: it says so with shred_before_delete.
        if self._shred and getattr(self._inner, "shred_before_delete", True):
            self.shred_keys(digest)
        self._inner.delete(digest)

    def shred_keys(self, digest: Digest) -> bool:
        """Zeroes the blob's key slots, durably: without its data key the ciphertext is noise."""
        overwrite = getattr(self._inner, "overwrite", None)
        if overwrite is None or not self._inner.contains(digest):
            return False
        reader = self._inner.open(digest)
        try:
            fixed = blob_format.decode_fixed(reader.read_at(0, blob_format.fixed_header_size()), str(digest))
        finally:
            reader.close()
        if not fixed.sealed:
            return False
        overwrite(digest, fixed.table_size, bytes(blob_format.SLOT_COUNT * SLOT_BYTES))
        return True

    def rewrap(self, digest: Digest) -> bool:
        """Wraps the blob's data key under the active KEK in its spare slot; False when it already is.

        The new wrap goes into the slot not holding the newest key and is
        fsynced; the newest slot is never touched, so a crash midway leaves
        the blob readable with the old wrap.
        """
        assert self.sealer is not None
        overwrite = getattr(self._inner, "overwrite")
        reader = FramedReader(self._inner.open(digest), str(digest), self.sealer)
        try:
            header, slots = reader.header, reader.slots
            if not header.sealed:
                return False
            filled = [(i, s) for i, s in enumerate(slots) if s is not None]
            newest_index, newest = max(filled, key=lambda item: item[1].generation)
            if self.sealer.version_of(newest) == self.sealer.active_version:
                return False
            slot = self.sealer.wrap(reader.dek, header.digest.hash, generation=newest.generation + 1)
        finally:
            reader.close()
        spare = 1 - newest_index
        overwrite(digest, header.slots_offset + spare * SLOT_BYTES, slot.encode())
        return True


def _hasher_for(access: CompressingBlobAccess, header: BlobHeader) -> blake3.blake3:
    """Sealed blobs have keyed addresses; plain ones (sealing off, or written before) do not."""
    if access.sealer is not None and header.sealed:
        return blake3.blake3(key=access.sealer.address_key)
    return blake3.blake3()


class FramedReader:
    """Reads the original bytes of a stored blob, opening only the frames needed."""

    def __init__(self, stored: BlobReader, where: str, sealer: BlobSealer | None = None) -> None:
        self._stored = stored
        self._where = where
        fixed = blob_format.decode_fixed(stored.read_at(0, blob_format.fixed_header_size()), where)
        self.header, self.slots = blob_format.decode(stored.read_at(0, fixed.header_size), where)
        self._offsets = self.header.frame_offsets()
        self._cipher: BlobCipher | None = None
        if self.header.sealed:
            if sealer is None:
                raise DataLoss(f"{where}: the blob is sealed and this daemon runs without its keyring")
            self._cipher = sealer.open_cipher(self.slots, self.header.digest.hash, where)
        self._decompressor = zstandard.ZstdDecompressor()
        self._cached: tuple[int, bytes] | None = None
        # Sealed: every byte read was authenticated (GCM, with the address, frame index and count),
        # so a reader of the whole blob needs no second pass with the keyed hash (see blob_format).
        self.authenticated = self._cipher is not None

    @property
    def dek(self) -> bytes:
        assert self._cipher is not None
        return self._cipher.dek

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
        if self._cipher is not None:
            raw = self._cipher.open_frame(index, raw, self.header.frame_aad(index), self._where)
        if self.header.codec is Codec.ZSTD_FRAMES:
            try:
                frame = self._decompressor.decompress(raw)
            except zstandard.ZstdError as exc:
                raise DataLoss(f"{self._where}: frame {index} is corrupt at rest ({exc})") from exc
        else:
            frame = raw
        if len(frame) != expected:
            raise DataLoss(f"{self._where}: frame {index} holds {len(frame)} bytes, expected {expected}")
        self._cached = (index, frame)
        return frame

    def close(self) -> None:
        self._stored.close()

