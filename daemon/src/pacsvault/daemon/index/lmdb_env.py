"""The LMDB environment and its single writer thread (group commit).

LMDB allows one write transaction at a time. Rather than have every store
thread queue on LMDB's lock and pay two fsyncs each, one writer thread takes
all pending writes, applies them in one transaction and commits once: under
load many stores share one commit, and readers never wait for it.

What a commit will point at must be durable before it: each write may bring
flushes to run first (the volume its blob was written to without a flush of
its own), and ``durable_before_commit`` names flushes every commit runs first
(the audit trail, so no change is ever indexed ahead of its record). The
writer runs each distinct flush once for the whole batch, then commits: one
flush of a volume covers every blob of the batch. A write whose flush failed
is refused, and the others commit.

The environment also carries how PHI is kept out of the index's bytes: the
tags that stand in for it in keys (``tags``) and the sealing of the records
that carry it (``sealer``), under the appliance's keys -- or, with
encryption off, public tags and no sealing: one key layout for both. (That
a data dir keeps the mode and keyring it was made with is the Archive's
check, for the blobs and the index together.)
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from pacsvault.daemon.errors import ConfigError, IndexFull, PacsvaultError, Unavailable
from pacsvault.daemon.index import keys as key_layout
from pacsvault.daemon.index.records import RecordSealer

if TYPE_CHECKING:
    from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteOp = Callable[[lmdb.Transaction], Any]
Flush = Callable[[], None]
_STOP = object()
# meta: the key layout. 2: tags instead of PHI in keys. Unmarked: PHI in keys (before sealing).
LAYOUT = b"index_layout"
_LAYOUT_VERSION = b"2"


class IndexEnvironment:
    """Opens the environment with every named database, and runs the writer."""

    def __init__(self, path: Path, *, map_size: int, max_batch: int = 256,
                 keys: ApplianceKeys | None = None) -> None:
        """``keys``: the appliance's keys, or None when encryption is off."""
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        # sync/metasync on: a commit returns only once it is on disk, so an
        # acknowledged store survives kill -9 and power loss.
        self.env = lmdb.open(
            str(path), map_size=map_size, max_dbs=len(key_layout.DATABASES) + 2,
            max_readers=1024, sync=True, metasync=True, readahead=False,
            mode=0o600,  # for the daemon's user only; older files are narrowed below
        )
        for made in path.glob("*.mdb"):
            made.chmod(0o600)
        self.dbs = {name: self.env.open_db(name.encode()) for name in key_layout.DATABASES}
        # The appliance's keys the tags and seals below come from (None: encryption off).
        self.keys = keys
        self.tags = key_layout.IndexTags(keys.index_tag if keys is not None else key_layout.plain_tag)
        self.sealer = RecordSealer(keys.index_values if keys is not None else None)
        try:
            self._check_layout()
        except ConfigError:
            self.env.close()
            raise
        self._max_batch = max_batch
        # Run before every commit (the audit trail's flush, set by the composition root).
        self.durable_before_commit: list[Flush] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._writer = threading.Thread(target=self._run_writer, name="index-writer", daemon=True)
        self._writer.start()

    def db(self, name: str) -> Any:
        return self.dbs[name]

    def _check_layout(self) -> None:
        """Marks a new index with its key layout; refuses one whose keys this version cannot find."""
        with self.env.begin(write=True) as txn:
            found = txn.get(LAYOUT, db=self.dbs["meta"])
            if found is None and txn.stat(self.dbs["patients"])["entries"]:
                found = b"1"
            if found is None:
                txn.put(LAYOUT, _LAYOUT_VERSION, db=self.dbs["meta"])
            elif found != _LAYOUT_VERSION:
                # Every lookup would silently find nothing: refuse rather than answer wrong.
                raise ConfigError(
                    f"the index at {self.path} has key layout {found.decode(errors='replace')}; this pacsvaultd "
                    f"reads layout {_LAYOUT_VERSION.decode()} only (tags, not PHI, in keys): restore from the peer "
                    "into an empty data dir")

    def read(self) -> lmdb.Transaction:
        """A read-only snapshot; use as a context manager."""
        return self.env.begin(buffers=False)

    def write(self, op: Callable[[lmdb.Transaction], T], durable_first: Sequence[Flush] = ()) -> T:
        """Runs ``op`` in the writer's next transaction; returns once it is durable.

        ``durable_first``: flushes that must return before the commit (run once a
        batch, however many writes of the batch name the same one). ``op`` must
        raise before it changes anything when it rejects its input, because other
        ops share the transaction.
        """
        future: Future[T] = Future()
        if self._closed:
            raise Unavailable("the index is closed (the daemon is shutting down)")
        self._queue.put((op, future, tuple(durable_first)))
        return future.result()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._writer.join()
            self.env.close()

    def _run_writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(more)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[WriteOp, Future[Any], tuple[Flush, ...]]]) -> None:
        batch = self._flushed(batch)
        if not batch:
            return
        try:
            results = self._apply(batch)
        except lmdb.MapFullError:
            # Retry one by one, so the ops that still fit are not refused for
            # the ones that do not.
            if len(batch) > 1:
                for single in batch:
                    self._commit_batch([single])
                return
            results = [IndexFull("the index is full (LMDB map size reached); raise index.map_size_bytes")]
        except Exception as exc:  # noqa: BLE001 - the writer thread must outlive any bug
            log.exception("index commit failed")
            results = [Unavailable(f"index commit failed: {type(exc).__name__}: {exc}")] * len(batch)
        for (_, future, _), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _flushed(self, batch: list[tuple[WriteOp, Future[Any], tuple[Flush, ...]]]
                 ) -> list[tuple[WriteOp, Future[Any], tuple[Flush, ...]]]:
        """Runs every flush the batch needs, once each; returns the writes whose flushes succeeded."""
        failed: dict[Flush, BaseException] = {}
        for flush in dict.fromkeys([*self.durable_before_commit, *(f for _, _, fs in batch for f in fs)]):
            try:
                flush()
            except Exception as exc:  # noqa: BLE001 - the writes that needed it are refused with it
                failed[flush] = exc if isinstance(exc, PacsvaultError) else Unavailable(
                    f"a flush before the index commit failed: {type(exc).__name__}: {exc}")
        if not failed:
            return batch
        kept = []
        for item in batch:
            problem = next((failed[f] for f in (*self.durable_before_commit, *item[2]) if f in failed), None)
            if problem is None:
                kept.append(item)
            else:
                item[1].set_exception(problem)
        return kept

    def _apply(self, batch: list[tuple[WriteOp, Future[Any], tuple[Flush, ...]]]) -> list[Any]:
        results: list[Any] = []
        with self.env.begin(write=True) as txn:
            for op, _, _ in batch:
                try:
                    results.append(op(txn))
                except PacsvaultError as exc:
                    results.append(exc)
        return results

    def stats(self) -> dict[str, int]:
        with self.read() as txn:
            counts = {name: txn.stat(db)["entries"] for name, db in self.dbs.items()}
            stored = txn.get(b"stored_bytes", db=self.dbs["meta"])
            counts["stored_bytes"] = int.from_bytes(stored, "little") if stored else 0
        info = self.env.info()
        stat = self.env.stat()
        counts["map_size"] = info["map_size"]
        counts["map_used"] = (info["last_pgno"] + 1) * stat["psize"]
        return counts


def prefix_keys(txn: lmdb.Transaction, db: object, prefix: bytes) -> Iterator[bytes]:
    """Keys of ``db`` that start with ``prefix``, in order."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key
