"""The index's side of ``pacsvault check``: what it names, read in pages (no read transaction is
held across a whole archive, so the check never keeps LMDB from reusing pages), and the few
corrections ``--repair`` makes (a refcount, a stale outbox entry)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import lmdb

from pacsvault.daemon.index import keys, placement
from pacsvault.daemon.index.catalog import STORED_BYTES, _add_counter
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import (
    BlobRecord,
    InstanceRecord,
    MoveIntent,
    OutboxEntry,
    TrashedInstance,
    decode,
    encode,
)

PAGE = 2000


def _pages(env: IndexEnvironment, db: str) -> Iterator[tuple[bytes, bytes]]:
    after: bytes | None = None
    while True:
        with env.read() as txn:
            cursor = txn.cursor(db=env.dbs[db])
            found = cursor.set_range(after) if after is not None else cursor.first()
            page = []
            while found and len(page) < PAGE:
                key, value = bytes(cursor.key()), bytes(cursor.value())
                if key != after:
                    page.append((key, value))
                found = cursor.next()
        if not page:
            return
        yield from page
        after = page[-1][0]


def blobs(env: IndexEnvironment) -> Iterator[tuple[bytes, BlobRecord]]:
    for key, value in _pages(env, "blobs"):
        yield key, decode(BlobRecord, value)


def instances(env: IndexEnvironment) -> Iterator[InstanceRecord]:
    for _, value in _pages(env, "instances"):
        yield decode(InstanceRecord, value)


def trashed(env: IndexEnvironment) -> Iterator[TrashedInstance]:
    for _, value in _pages(env, "trash"):
        yield decode(TrashedInstance, value)


def references(env: IndexEnvironment) -> Counter[bytes]:
    """How many instances (live and in the trash) name each blob key: what its refcount must be."""
    counted: Counter[bytes] = Counter()
    for instance in instances(env):
        counted[keys.blob_key(1, instance.digest)] += 1
    for entry in trashed(env):
        counted[keys.blob_key(1, entry.instance.digest)] += 1
    return counted


def moving(env: IndexEnvironment) -> set[tuple[str, bytes]]:
    """(volume id, blob key) of both ends of every move in progress: copies that are meant to be there."""
    found = set()
    for intent in placement.move_intents(env):
        key = keys.blob_key(intent.digest_function, intent.digest)
        found |= {(intent.from_volume_id, key), (intent.to_volume_id, key)}
    return found


def doomed(env: IndexEnvironment) -> set[tuple[str, bytes]]:
    """(volume id, blob key) of deleted blobs whose copy is still to be destroyed."""
    return {(decode(BlobRecord, v).location.volume_id, k) for k, v in _pages(env, "doomed_blobs")}


def outbox_entries(env: IndexEnvironment) -> Iterator[tuple[bytes, OutboxEntry]]:
    for key, value in _pages(env, "outbox"):
        yield key, decode(OutboxEntry, value)


def blob_named(env: IndexEnvironment, blob_key: bytes, volume_id: str) -> bool:
    """Whether any record means a copy of this blob to be on this volume (now, under the caller's lock)."""
    with env.read() as txn:
        value = txn.get(blob_key, db=env.dbs["blobs"])
        if value is not None and decode(BlobRecord, value).location.volume_id == volume_id:
            return True
        doomed_value = txn.get(blob_key, db=env.dbs["doomed_blobs"])
        if doomed_value is not None and decode(BlobRecord, doomed_value).location.volume_id == volume_id:
            return True
        intent = txn.get(blob_key, db=env.dbs["moves"])
        if intent is not None:
            move = decode(MoveIntent, intent)
            return volume_id in (move.from_volume_id, move.to_volume_id)
    return False


def set_refcount(env: IndexEnvironment, blob_key: bytes, was: int, counted: int) -> bool:
    """Sets a blob's refcount to what the instances say, if it is still ``was``; at zero the blob
    is doomed (its copy destroyed like a deleted one's). False when it changed meanwhile."""

    def op(txn: lmdb.Transaction) -> bool:
        value = txn.get(blob_key, db=env.dbs["blobs"])
        if value is None:
            return False
        blob = decode(BlobRecord, value)
        if blob.refcount != was:
            return False
        if counted > 0:
            blob.refcount = counted
            txn.put(blob_key, encode(blob), db=env.dbs["blobs"])
            return True
        txn.delete(blob_key, db=env.dbs["blobs"])
        placement.count_blob_on_volume(txn, env, blob, -1)
        _add_counter(txn, env.dbs["meta"], STORED_BYTES, -blob.size_bytes)
        txn.put(blob_key, encode(blob), db=env.dbs["doomed_blobs"])
        return True

    return bool(env.write(op, reserve_ok=True))
