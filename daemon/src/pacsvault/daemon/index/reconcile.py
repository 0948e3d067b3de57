"""After an index rebuild: what the peer holds, written back into the blob records.

The peer's replica records name, for each of this appliance's instances it
holds, the replica's name (the plain BLAKE3 of the stored form sent). The
rebuilt index learns from them which blobs are protected and under what
name a repair asks for them; instances the peer does not hold are queued for
replication.
"""

from __future__ import annotations

import lmdb

from pacsvault.daemon.digest import DigestFunction
from pacsvault.daemon.index import keys, outbox
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord, OutboxEntry, decode, encode

BATCH = 2000


def mark_replicated(env: IndexEnvironment, names: dict[str, tuple[bytes, int]]) -> int:
    """``names``: SOP Instance UID -> (replica name hash, its size). Returns how many blobs were marked."""
    marked = 0
    items = list(names.items())
    for at in range(0, len(items), BATCH):
        marked += env.write(lambda txn, part=items[at : at + BATCH]: _mark(txn, env, part))
    return marked


def _mark(txn: lmdb.Transaction, env: IndexEnvironment, part: list[tuple[str, tuple[bytes, int]]]) -> int:
    marked = 0
    for sop_uid, (name, size) in part:
        value = txn.get(sop_uid.encode(), db=env.dbs["instances"])
        if value is None:
            continue
        key = keys.blob_key(DigestFunction.BLAKE3, decode(InstanceRecord, value).digest)
        blob_value = txn.get(key, db=env.dbs["blobs"])
        if blob_value is None:
            continue
        blob = decode(BlobRecord, blob_value)
        blob.replicated, blob.replica_digest, blob.replica_size = True, name, size
        txn.put(key, encode(blob), db=env.dbs["blobs"])
        marked += 1
    return marked


def queue_missing(env: IndexEnvironment, at_peer: set[str], now: float) -> int:
    """Queues for replication every instance here that the peer does not hold; returns how many."""
    queued, after = 0, b""
    while True:
        def op(txn: lmdb.Transaction, start: bytes = after) -> tuple[int, bytes, bool]:
            cursor = txn.cursor(db=env.dbs["instances"])
            count, seen, last = 0, 0, start
            found = cursor.set_range(start) if start else cursor.first()
            while found and seen < BATCH:
                key = bytes(cursor.key())
                if key != start:
                    seen += 1
                    last = key
                    if key.decode() not in at_peer:
                        instance = decode(InstanceRecord, cursor.value())
                        outbox.append(txn, env, OutboxEntry(
                            sop_instance_uid=instance.sop_instance_uid, digest_function=int(DigestFunction.BLAKE3),
                            digest=instance.digest, size_bytes=instance.size_bytes, enqueued_at=now))
                        count += 1
                found = cursor.next()
            return count, last, seen < BATCH

        count, after, done = env.write(op)
        queued += count
        if done:
            return queued
