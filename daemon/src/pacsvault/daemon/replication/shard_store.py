"""The peer side: shards placed over volumes, written durably, uploads resumable.

Layout of each volume::

    <volume>/shards/<function>/ab/cd/<hex digest>.<index>   committed shards
    <volume>/partial/<function>-<hex digest>.<index>        resumable uploads in progress
    <volume>/tmp/                                           whole-shard writes in progress
    <volume>/quarantine/                                    shards found bad, with a .reason file

Placement is a pure function of (digest, index): shard i of a blob lives on
volume ``(start + i) % n`` where ``start`` comes from the digest. The k + m
shards of one blob are therefore on different volumes when there are at least
k + m of them, and a lost volume costs any blob at most ceil((k+m)/n) shards.
Readers still look on every volume, so adding a volume (which moves the
placement) never hides a shard.

Every committed shard has been verified (header and BLAKE3) before it got its
name, so the store never holds a shard it could not vouch for at write time.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.errors import DataLoss, InvalidInput, Unavailable
from pacsvault.daemon.replication import _files as files
from pacsvault.daemon.replication import shard_format
from pacsvault.daemon.replication.codec import verify_shard
from pacsvault.daemon.replication.shard_format import MAX_SHARDS, ShardHeader

_LOCK_STRIPES = 64


class BlobName(Protocol):
    """Anything naming a blob's shards: a Digest, or a ShardKey from a listing."""

    @property
    def function(self) -> DigestFunction: ...

    @property
    def hex(self) -> str: ...


class ShardKey(NamedTuple):
    """A blob as named by its shard files, before any header was read."""

    function: DigestFunction
    hex: str

    @property
    def token(self) -> str:
        """Sortable ``<function>/<hex>``: listings run in this order, cursors hold it."""
        return f"{self.function.name.lower()}/{self.hex}"


class ShardStore:
    """Shards of many blobs over one or more volume directories.

    Args:
        volumes: volume roots, in a fixed order (placement depends on it).
        clock: wall clock, for the age of leftover partial uploads.
    """

    def __init__(self, volumes: Sequence[Path], clock: Callable[[], float] = time.time) -> None:
        if not volumes:
            raise InvalidInput("a shard store needs at least one volume")
        self.volumes = [Path(v) for v in volumes]
        self._clock = clock
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        for volume in self.volumes:
            for sub in ("shards", "partial", "tmp", "quarantine"):
                files.make_dirs(volume / sub)

    # -- placement -----------------------------------------------------------

    def volume_for(self, name: BlobName, index: int) -> Path:
        """The volume shard ``index`` of a blob is written to."""
        start = int(name.hex[:16], 16) % len(self.volumes)
        return self.volumes[(start + index) % len(self.volumes)]

    def path_of(self, name: BlobName, index: int, volume: Path | None = None) -> Path:
        h = name.hex
        root = volume if volume is not None else self.volume_for(name, index)
        return root / "shards" / name.function.name.lower() / h[:2] / h[2:4] / f"{h}.{index}"

    def _partial_path(self, name: BlobName, index: int) -> Path:
        return self.volume_for(name, index) / "partial" / f"{name.function.name.lower()}-{name.hex}.{index}"

    def _find(self, name: BlobName, index: int) -> Path | None:
        placed = self.volume_for(name, index)
        for volume in [placed, *(v for v in self.volumes if v != placed)]:
            path = self.path_of(name, index, volume)
            if path.exists():
                return path
        return None

    # -- whole shards ----------------------------------------------------------

    def put(self, digest: Digest, index: int, raw: bytes, sync: bool = True) -> bool:
        """Verifies one whole shard and writes it durably.

        With ``sync=False`` the shard is named but not yet flushed: the caller
        makes it durable with :meth:`sync_blob` before reporting it stored
        (so a blob's shards share one flush of their directory).

        Returns:
            True when written, False when the shard was already stored.

        Raises:
            InvalidInput: the shard is damaged or is not shard ``index`` of ``digest``.
            StorageFull, Unavailable: the volume refused the write.
        """
        _check_index(index)
        _verify_for(digest, index, raw)
        with self._lock(digest, index):
            if self._find(digest, index) is not None:
                return False
            final = self.path_of(digest, index)
            tmp = _volume_of(final) / "tmp" / f"{final.name}.{uuid.uuid4().hex}.tmp"
            try:
                if sync:
                    files.write_new(tmp, raw)
                    self._publish(tmp, final)
                else:
                    files.write_new(tmp, raw, sync=False)  # sync_blob fsyncs the batch
                    files.make_dirs(final.parent)
                    os.replace(tmp, final)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise files.volume_error(final, exc) from exc
        return True

    def sync_blob(self, name: BlobName, indexes: Sequence[int]) -> None:
        """Flushes the named shards of one blob and their directories (each directory once)."""
        directories: set[Path] = set()
        for index in indexes:
            path = self._find(name, index)
            if path is None:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise files.volume_error(path, exc) from exc
            directories.add(path.parent)
        for directory in directories:
            files.fsync_dir(directory)

    def get(self, name: BlobName, index: int) -> bytes | None:
        """The stored bytes of one shard, unverified; None when absent."""
        path = self._find(name, index)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None  # deleted or quarantined since _find
        except OSError as exc:
            raise Unavailable(f"shard {path} failed a read: {exc.strerror}") from exc

    def indexes(self, name: BlobName) -> list[int]:
        """Indexes of the shards of a blob present on any volume."""
        found: set[int] = set()
        for volume in self.volumes:
            directory = self.path_of(name, 0, volume).parent
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for entry in names:
                stem, _, suffix = entry.rpartition(".")
                if stem == name.hex and suffix.isdigit():
                    found.add(int(suffix))
        return sorted(found)

    def delete(self, name: BlobName) -> int:
        """Removes every shard and partial upload of a blob; returns how many files."""
        removed = 0
        for index in range(MAX_SHARDS):
            paths = [self.path_of(name, index, v) for v in self.volumes] + [self._partial_path(name, index)]
            with self._lock(name, index):
                for path in paths:
                    if files.unlink(path):
                        files.fsync_dir(path.parent)
                        removed += 1
        return removed

    def quarantine(self, name: BlobName, index: int, reason: str) -> Path | None:
        """Moves a bad shard aside with the reason, instead of deleting evidence.

        Returns:
            Where it went, or None when there was no such shard.
        """
        with self._lock(name, index):
            path = self._find(name, index)
            if path is None:
                return None
            stamp = uuid.uuid4().hex[:8]
            target = _volume_of(path) / "quarantine" / f"{name.function.name.lower()}-{path.name}.{stamp}"
            os.replace(path, target)
            files.write_new(target.with_name(target.name + ".reason"), (reason + "\n").encode())
            for directory in (path.parent, target.parent):
                files.fsync_dir(directory)
        return target

    # -- listing ---------------------------------------------------------------

    def iter_keys(self, after: str | None = None) -> Iterator[ShardKey]:
        """Every blob with a shard on some volume, in ``token`` order.

        Args:
            after: a ``ShardKey.token``; only blobs after it are listed (a
                scrub or restore resumes from its cursor without re-listing).
        """
        for fname in self._children(()):
            function = DigestFunction.__members__.get(fname.upper())
            if function is None or (after is not None and fname < after.split("/", 1)[0]):
                continue
            for ab in self._children((fname,)):
                for cd in self._children((fname, ab)):
                    prefix = f"{fname}/{ab}{cd}"
                    if after is not None and prefix < after[: len(prefix)]:
                        continue  # the whole directory sorts before the cursor
                    hexes = {entry.rpartition(".")[0] for entry in self._children((fname, ab, cd))}
                    for h in sorted(hexes):
                        key = ShardKey(function, h)
                        if h and (after is None or key.token > after):
                            yield key

    def header_of(self, name: BlobName) -> ShardHeader | None:
        """The header most of a blob's readable shard headers agree on.

        None when no shard of it has an intact header naming this blob.
        """
        headers = []
        for index in self.indexes(name):
            header = _read_header(self._find(name, index))
            if header is not None and header.digest.hex == name.hex and header.digest.function == name.function:
                headers.append(header)
        return shard_format.consensus(headers)

    def iter_digests(self, after: str | None = None) -> Iterator[Digest]:
        """Digests of the stored blobs (size from their shard headers), in token order.

        A blob with no intact shard header is skipped here; the scrub reports it.
        """
        for key in self.iter_keys(after):
            header = self.header_of(key)
            if header is not None:
                yield header.digest

    def _children(self, parts: tuple[str, ...]) -> list[str]:
        names: set[str] = set()
        for volume in self.volumes:
            try:
                names.update(os.listdir(volume.joinpath("shards", *parts)))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return sorted(names)

    # -- resumable uploads -------------------------------------------------------

    def committed_size(self, digest: Digest, index: int) -> int:
        """Bytes of shard ``index`` the store holds durably; a sender resumes there.

        The whole shard's size once committed. The partial is fsynced before
        its size is reported, so what this reports survives a power cut.
        """
        _check_index(index)
        with self._lock(digest, index):
            final = self._find(digest, index)
            if final is not None:
                return final.stat().st_size
            return files.durable_size(self._partial_path(digest, index))

    def write_at(self, digest: Digest, index: int, offset: int, data: bytes) -> int:
        """Appends upload bytes at ``offset`` durably; returns the new committed size.

        Bytes before the committed size are skipped rather than written again,
        so a sender that resends after a lost acknowledgement makes no
        duplicates. Writing to a committed shard is a no-op.

        Raises:
            InvalidInput: ``offset`` is past the committed size (a gap).
        """
        _check_index(index)
        if offset < 0:
            raise InvalidInput(f"write offset {offset} is negative")
        with self._lock(digest, index):
            final = self._find(digest, index)
            if final is not None:
                return final.stat().st_size
            partial = self._partial_path(digest, index)
            committed = files.durable_size(partial)
            if offset > committed:
                raise InvalidInput(f"write at offset {offset} of shard {index} of {digest} leaves a gap: "
                                   f"{committed} bytes committed")
            fresh = memoryview(data)[committed - offset :]
            if fresh:
                try:
                    files.append_durably(partial, committed, fresh)
                except OSError as exc:
                    raise files.volume_error(partial, exc) from exc
            return max(committed, offset + len(data))

    def finish(self, digest: Digest, index: int) -> ShardHeader:
        """Verifies the uploaded shard and commits it under its final name.

        Raises:
            InvalidInput: nothing was uploaded, or the shard does not verify
                (the partial is deleted: the sender starts again from 0).
        """
        _check_index(index)
        with self._lock(digest, index):
            final = self._find(digest, index)
            if final is not None:
                return shard_format.parse_header(final.read_bytes(), str(final))
            partial = self._partial_path(digest, index)
            try:
                raw = partial.read_bytes()
            except FileNotFoundError as exc:
                raise InvalidInput(f"no upload of shard {index} of {digest} to finish") from exc
            try:
                header = _verify_for(digest, index, raw)
            except InvalidInput:
                files.unlink(partial)
                files.fsync_dir(partial.parent)
                raise
            self._publish(partial, self.path_of(digest, index))
        return header

    def clean_partials(self, older_than_s: float) -> int:
        """Removes uploads and temp files untouched for ``older_than_s``; returns how many."""
        removed = 0
        cutoff = self._clock() - older_than_s
        for volume in self.volumes:
            for directory in (volume / "partial", volume / "tmp"):
                for leftover in directory.iterdir():
                    try:
                        if leftover.stat().st_mtime < cutoff and files.unlink(leftover):
                            removed += 1
                    except FileNotFoundError:
                        continue
                files.fsync_dir(directory)
        return removed

    # -- helpers -------------------------------------------------------------------

    def _lock(self, name: BlobName, index: int) -> threading.Lock:
        # Striped: bounded memory, and unrelated shards rarely wait on each other.
        return self._locks[hash((name.hex, index)) % _LOCK_STRIPES]

    def _publish(self, written: Path, final: Path) -> None:
        created = files.make_dirs(final.parent)
        # Atomic publish in one volume: readers see no shard or the whole, verified one.
        os.replace(written, final)
        # fsync the new name (and new directories), then the old directory, so
        # neither a lost shard nor a stale partial is left after a crash.
        for directory in [final.parent, *created, written.parent]:
            files.fsync_dir(directory)


def _check_index(index: int) -> None:
    if not 0 <= index < MAX_SHARDS:
        raise InvalidInput(f"shard index {index} outside 0..{MAX_SHARDS - 1}")


def _verify_for(digest: Digest, index: int, raw: bytes) -> ShardHeader:
    try:
        header = verify_shard(raw)
    except DataLoss as exc:
        raise InvalidInput(f"shard {index} of {digest} does not verify: {exc}") from exc
    if header.digest != digest or header.index != index:
        raise InvalidInput(f"shard is {header.index} of {header.digest}, expected {index} of {digest}")
    return header


def _volume_of(shard_path: Path) -> Path:
    # <volume>/shards/<function>/ab/cd/<file>
    return shard_path.parents[4]


def _read_header(path: Path | None) -> ShardHeader | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return shard_format.parse_header(f.read(shard_format.MAX_HEADER_SIZE), str(path))
    except (DataLoss, OSError):
        return None  # damaged, or gone since it was listed: other shards may tell
