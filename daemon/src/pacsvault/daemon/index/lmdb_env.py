"""The LMDB environment and its group commit.

LMDB allows one write transaction at a time. Rather than have every store
thread queue on LMDB's lock and pay two fsyncs each, the writes that wait
are applied in one transaction and committed once: under load many stores
share one commit, and readers never wait for it. The commit runs in the
thread of one of the writers (the leader: the first to arrive while no
commit runs), not in a writer thread of its own, which saved two thread
switches per write. The leader commits until its own write is in, then
hands the lead to the oldest write still waiting.

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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from pacsvault.daemon.errors import ConfigError, IndexFull, PacsvaultError, Unavailable
from pacsvault.daemon.index import headroom
from pacsvault.daemon.index import keys as key_layout
from pacsvault.daemon.index.file_check import check_file
from pacsvault.daemon.index.records import RecordSealer

if TYPE_CHECKING:
    from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys

log = logging.getLogger(__name__)
T = TypeVar("T")
WriteOp = Callable[[lmdb.Transaction], Any]
Flush = Callable[[], None]
# meta: the key layout. 2: tags instead of PHI in keys. Unmarked: PHI in keys (before sealing).
LAYOUT = b"index_layout"
INDEX_FULL = ("the index is full (LMDB map size reached, but for the headroom kept for deletes and repairs): "
              "delete studies or raise index.map_size_bytes")
_LAYOUT_VERSION = b"2"


class IndexEnvironment:
    """Opens the environment with every named database, and runs the writer."""

    def __init__(self, path: Path, *, map_size: int, max_batch: int = 256,
                 keys: ApplianceKeys | None = None, reserve_percent: float = 5.0) -> None:
        """``keys``: the appliance's keys, or None when encryption is off. ``reserve_percent``:
        the part of the map kept for deletes and repairs (see ``headroom``)."""
        path.mkdir(parents=True, exist_ok=True)
        check_file(path)  # a cut-short file would crash the mmap (SIGBUS): refuse it first
        self.path = path
        self.reserve_percent = reserve_percent
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
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._committing = False
        self._closed = False

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

    def write(self, op: Callable[[lmdb.Transaction], T], durable_first: Sequence[Flush] = (), *,
              reserve_ok: bool = False) -> T:
        """Runs ``op`` in the writer's next transaction; returns once it is durable.

        ``durable_first``: flushes that must return before the commit (run once a
        batch, however many writes of the batch name the same one). ``op`` must
        raise before it changes anything when it rejects its input, because other
        ops share the transaction. ``reserve_ok``: the write frees space or keeps
        data safe (a delete, a repair) and may use the reserved headroom; other
        writes are refused with IndexFull once only the reserve is left.
        """
        write = _Write(op, tuple(durable_first), reserve_ok)
        with self._lock:
            if self._closed:
                raise Unavailable("the index is closed (the daemon is shutting down)")
            self._pending.append(write)
            lead = not self._committing
            self._committing = True
        if not lead:
            write.wait_for_turn()  # committed by a leader, or handed the lead
        if not write.done:
            self._lead(write)
        return write.result()  # type: ignore[no-any-return]

    def _lead(self, own: _Write) -> None:
        """Commits batches until ``own`` is in; then hands the lead on (or gives it up)."""
        while True:
            with self._lock:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            self._commit_batch(batch)
            with self._lock:
                if own.done:
                    if self._pending:
                        self._pending[0].take_lead()
                    else:
                        self._committing = False
                    return

    def close(self) -> None:
        """Refuses new writes, lets the ones under way commit, closes the environment."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        while True:
            with self._lock:
                if not self._committing and not self._pending:
                    break
            time.sleep(0.01)
        self.env.close()

    def _commit_batch(self, batch: list[_Write]) -> None:
        batch = self._within_headroom(batch)
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
            results = [IndexFull(INDEX_FULL)]
        except Exception as exc:  # noqa: BLE001 - the writer thread must outlive any bug
            log.exception("index commit failed")
            results = [Unavailable(f"index commit failed: {type(exc).__name__}: {exc}")] * len(batch)
        for write, result in zip(batch, results, strict=True):
            write.finish(result)

    def _within_headroom(self, batch: list[_Write]) -> list[_Write]:
        """Refuses the batch's ordinary writes when only the reserve is left."""
        if all(w.reserve_ok for w in batch) or not self.usage().exhausted:
            return batch
        for write in batch:
            if not write.reserve_ok:
                write.finish(IndexFull(INDEX_FULL))
        return [w for w in batch if w.reserve_ok]

    def usage(self) -> headroom.Usage:
        return headroom.usage(self.env, self.dbs, self.reserve_percent)

    def _flushed(self, batch: list[_Write]) -> list[_Write]:
        """Runs every flush the batch needs, once each; returns the writes whose flushes succeeded."""
        failed: dict[Flush, BaseException] = {}
        for flush in dict.fromkeys([*self.durable_before_commit, *(f for w in batch for f in w.durable_first)]):
            try:
                flush()
            except Exception as exc:  # noqa: BLE001 - the writes that needed it are refused with it
                failed[flush] = exc if isinstance(exc, PacsvaultError) else Unavailable(
                    f"a flush before the index commit failed: {type(exc).__name__}: {exc}")
        if not failed:
            return batch
        kept = []
        for write in batch:
            problem = next((failed[f] for f in (*self.durable_before_commit, *write.durable_first) if f in failed),
                           None)
            if problem is None:
                kept.append(write)
            else:
                write.finish(problem)
        return kept

    def _apply(self, batch: list[_Write]) -> list[Any]:
        results: list[Any] = []
        with self.env.begin(write=True) as txn:
            for write in batch:
                op = write.op
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
        counts["map_live"] = headroom.live_bytes(self.env, self.dbs)
        return counts


class _Write:
    """One write waiting for its commit: done with a result, or told to lead the next commit."""

    __slots__ = ("op", "durable_first", "reserve_ok", "done", "_result", "_lead", "_event")

    def __init__(self, op: WriteOp, durable_first: tuple[Flush, ...], reserve_ok: bool = False) -> None:
        self.op, self.durable_first, self.reserve_ok = op, durable_first, reserve_ok
        self.done, self._result, self._lead = False, None, False
        self._event = threading.Event()

    def finish(self, result: Any) -> None:
        self._result, self.done = result, True
        self._event.set()

    def take_lead(self) -> None:
        self._lead = True
        self._event.set()

    def wait_for_turn(self) -> None:
        self._event.wait()

    def result(self) -> Any:
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result


def prefix_keys(txn: lmdb.Transaction, db: object, prefix: bytes) -> Iterator[bytes]:
    """Keys of ``db`` that start with ``prefix``, in order."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key
