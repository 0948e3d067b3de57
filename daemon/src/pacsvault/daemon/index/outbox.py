"""The replication outbox: changes that must reach the peer, in order, durably.

An entry is appended in the same LMDB transaction as the change it carries
(the instance being indexed), so nothing acknowledged to a client can miss
the peer, and it is removed only after the peer acknowledged it. It never
drops work: a peer away for hours leaves a longer outbox, nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.index import keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord, OutboxEntry, decode, encode

_SEQ = struct.Struct(">Q")
_NEXT_SEQ = b"outbox_next_seq"
_PENDING_BYTES = b"outbox_pending_bytes"


@dataclass(frozen=True)
class Backlog:
    entries: int
    bytes: int
    oldest_enqueued_at: float | None


def append(txn: lmdb.Transaction, env: IndexEnvironment, entry: OutboxEntry) -> None:
    """Adds ``entry`` inside the caller's transaction."""
    meta = env.dbs["meta"]
    raw = txn.get(_NEXT_SEQ, db=meta)
    seq = _SEQ.unpack(raw)[0] if raw else 1
    txn.put(_SEQ.pack(seq), encode(entry), db=env.dbs["outbox"])
    txn.put(_NEXT_SEQ, _SEQ.pack(seq + 1), db=meta)
    _add_pending(txn, env, entry.size_bytes)


def pending(env: IndexEnvironment, limit: int) -> list[tuple[bytes, OutboxEntry]]:
    """The oldest ``limit`` entries, in the order they were appended."""
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["outbox"])
        out = []
        for key, value in cursor:
            out.append((bytes(key), decode(OutboxEntry, value)))
            if len(out) >= limit:
                break
        return out


def acknowledge(env: IndexEnvironment, done: list[tuple[bytes, OutboxEntry]],
                names: dict[bytes, Digest] | None = None) -> None:
    """Removes entries the peer acknowledged and marks their blobs protected, in one transaction.

    ``names`` (by outbox key) is what each blob is called at the peer, kept
    so that a repair can ask for it.
    """
    names = names or {}

    def op(txn: lmdb.Transaction) -> None:
        for key, entry in done:
            if txn.delete(key, db=env.dbs["outbox"]):
                _add_pending(txn, env, -entry.size_bytes)
            blob_key = keys.blob_key(entry.digest_function, entry.digest)
            value = txn.get(blob_key, db=env.dbs["blobs"])
            if value is None:
                continue
            blob = decode(BlobRecord, value)
            name = names.get(key)
            if blob.replicated and (name is None or name.hash == blob.replica_digest):
                continue
            blob.replicated = True
            if name is not None:
                blob.replica_digest, blob.replica_size = name.hash, name.size_bytes
            txn.put(blob_key, encode(blob), db=env.dbs["blobs"])

    env.write(op, reserve_ok=True)


def backlog(env: IndexEnvironment) -> Backlog:
    with env.read() as txn:
        entries = txn.stat(env.dbs["outbox"])["entries"]
        raw = txn.get(_PENDING_BYTES, db=env.dbs["meta"])
        cursor = txn.cursor(db=env.dbs["outbox"])
        oldest = decode(OutboxEntry, cursor.value()) if cursor.first() else None
    return Backlog(entries, _SEQ.unpack(raw)[0] if raw else 0, oldest.enqueued_at if oldest else None)


def _add_pending(txn: lmdb.Transaction, env: IndexEnvironment, delta: int) -> None:
    raw = txn.get(_PENDING_BYTES, db=env.dbs["meta"])
    value = max(0, (_SEQ.unpack(raw)[0] if raw else 0) + delta)
    txn.put(_PENDING_BYTES, _SEQ.pack(value), db=env.dbs["meta"])


def reseed(env: IndexEnvironment, now: float, batch: int = 1000) -> int:
    """Queues every instance for replication again (a new, empty peer); returns how many.

    One transaction per ``batch`` instances, so a large archive never holds the writer long.
    """
    queued, after = 0, b""
    while True:
        def op(txn: lmdb.Transaction, start: bytes = after) -> tuple[int, bytes]:
            cursor = txn.cursor(db=env.dbs["instances"])
            count, last = 0, start
            if not cursor.set_range(start):
                return 0, start
            for key, value in cursor:
                if key == start:
                    continue
                instance = decode(InstanceRecord, value)
                blob_value = txn.get(keys.blob_key(DigestFunction.BLAKE3, instance.digest), db=env.dbs["blobs"])
                blob = decode(BlobRecord, blob_value) if blob_value else None
                append(txn, env, OutboxEntry(
                    sop_instance_uid=instance.sop_instance_uid, digest_function=int(DigestFunction.BLAKE3),
                    digest=instance.digest, size_bytes=blob.size_bytes if blob else instance.size_bytes,
                    enqueued_at=now))
                count, last = count + 1, bytes(key)
                if count >= batch:
                    break
            return count, last

        count, after = env.write(op)
        queued += count
        if count < batch:
            return queued


def drop(env: IndexEnvironment, key: bytes) -> None:
    """Removes one entry without sending it (``pacsvault check --repair``: an entry for a blob gone)."""

    def op(txn: lmdb.Transaction) -> None:
        value = txn.get(key, db=env.dbs["outbox"])
        if value is not None:
            txn.delete(key, db=env.dbs["outbox"])
            _add_pending(txn, env, -decode(OutboxEntry, value).size_bytes)

    env.write(op, reserve_ok=True)
