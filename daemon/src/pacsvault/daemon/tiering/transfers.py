"""The mover's I/O on a batch: several blobs at once where a volume gains from it.

A disk does one copy at a time best (its fsyncs are what take the time); an
object store answers each request after a round trip, so the mover keeps
several requests in flight there (``Volume.transfers_at_once``), as any S3
client does. Each step still finishes for the whole batch before the next
begins, so the crash-safe order of the move holds.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import DataLoss, FailedPrecondition, Unavailable
from pacsvault.daemon.index.records import BlobRecord
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.tiered import Volume

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


# Deleting a copy left behind waits for fsyncs (a shred, then the unlink), not the network:
# more of them at once than transfers.
DELETES_PER_TRANSFER = 4


def width(volumes: Iterable[Volume]) -> int:
    """How many transfers at once the busiest-capable of ``volumes`` takes."""
    return max((v.transfers_at_once() for v in volumes), default=1)


def each(items: list[T], step: Callable[[T], R], at_once: int) -> list[R]:
    """``step`` on every item, ``at_once`` at a time, results in order; the first error is raised
    once every started step has ended."""
    if at_once <= 1 or len(items) <= 1:
        return [step(item) for item in items]
    futures = [_pool(at_once).submit(step, item) for item in items]
    concurrent.futures.wait(futures)
    return [f.result() for f in futures]


# One pool per width, kept: starting threads for every step of every batch cost more than the steps.
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(at_once: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(at_once)
        if pool is None:
            pool = _pools[at_once] = ThreadPoolExecutor(at_once, thread_name_prefix="mover-io",
                                                        initializer=yield_cpu)
        return pool


# Background moves give the CPU to serving first: the mover's threads run this much nicer.
MOVER_NICE = 10


def yield_cpu() -> None:
    """Lowers the calling thread's CPU priority (Linux: a thread is a task of its own)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MOVER_NICE)
    except OSError:  # not allowed here (a container's seccomp): moves run at normal priority
        pass


@dataclass
class Move:
    blob: BlobRecord
    digest: Digest
    raw: bytes
    source: Volume
    target: Volume
    proven: bool = False  # the copy step itself proved the copy holds ``raw`` (see Volume.copy_in)


@contextlib.contextmanager
def pausing(volume: Volume) -> Iterator[None]:
    """A volume that fails a transfer (an object store away) is told, so the mover leaves it until it answers."""
    try:
        yield
    except Unavailable as exc:
        volume.transfer_failed(exc)
        raise


def read_stored(item: tuple[BlobRecord, Volume, Digest]) -> bytes:
    _, source, digest = item
    with pausing(source):
        reader = source.local.open(digest)
        try:
            return read_all(reader)
        finally:
            reader.close()


def verify(move: Move) -> None:
    target = move.target
    with pausing(target):
        try:
            target.verify_copy(move.digest, move.raw, move.proven)
        except DataLoss as exc:
            target.local.delete(move.digest)
            raise DataLoss(f"copy on {target.path} failed verification ({exc}); removed, the source is kept") from exc


def copy(move: Move) -> None:
    with pausing(move.target):
        try:
            move.proven = move.target.copy_in(move.digest, move.raw)
        except DataLoss as exc:  # checked before it was sent: the source itself is bad
            raise DataLoss(f"blob {move.digest.hex[:16]} on {move.source.path} failed verification before its "
                           f"copy to {move.target.path} ({exc}); nothing was copied") from exc


def delete_leftover(item: tuple[Move, bool]) -> None:
    move, switched = item
    # Through the sealing layer: the copy left behind has its key slots zeroed first.
    leftover = move.source if switched else move.target
    delete_copy(leftover, move.digest, leftover.access.delete)


def delete_copy(volume: Volume, digest: Digest, delete: Callable[[Digest], None]) -> None:
    with pausing(volume):
        try:
            delete(digest)
        except FailedPrecondition as exc:  # the store keeps it under Object Lock: it stays, unreferenced
            log.info("volume %s keeps its copy of blob %s: %s", volume.path, digest.hex[:16], exc)
