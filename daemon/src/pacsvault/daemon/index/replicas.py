"""What this appliance keeps for its peer: the peer's replica records and its audit checkpoints.

The shards themselves are files (replication.shard_store); these are the
index entries that say which instances they belong to, written only once the
shards are verified and flushed.
"""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from pacsvault.daemon.index import keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import decode, encode
from pacsvault.v1 import peer_pb2

ReplicaRecord = peer_pb2.ReplicaRecord


def put_records(env: IndexEnvironment, origin: str, records: list[ReplicaRecord]) -> None:
    def op(txn: lmdb.Transaction) -> None:
        for record in records:
            txn.put(keys.join(origin, record.sop_instance_uid), encode(record), db=env.dbs["replica_records"])

    env.write(op)


def list_records(env: IndexEnvironment, origin: str, after_sop_uid: str, limit: int) -> list[ReplicaRecord]:
    """Up to ``limit`` of ``origin``'s records after ``after_sop_uid`` (all from the start when empty)."""
    prefix = keys.join(origin, b"")
    start = prefix + after_sop_uid.encode() + b"\x00" if after_sop_uid else prefix
    records: list[ReplicaRecord] = []
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["replica_records"])
        if cursor.set_range(start):
            for key, value in cursor:
                if not key.startswith(prefix) or len(records) >= limit:
                    break
                records.append(decode(ReplicaRecord, value))
    return records


def delete_records(env: IndexEnvironment, origin: str, wanted: list[tuple[str, bool]],
                   released: Callable[[ReplicaRecord], None]) -> int:
    """Forgets the named instances in one transaction; ``released`` hears of each whose blob goes too.

    Returns how many records were deleted.
    """

    def op(txn: lmdb.Transaction) -> tuple[int, list[ReplicaRecord]]:
        deleted, gone = 0, []
        for sop_uid, release in wanted:
            key = keys.join(origin, sop_uid)
            value = txn.get(key, db=env.dbs["replica_records"])
            if value is None:
                continue  # never arrived, or deleted by an earlier try
            txn.delete(key, db=env.dbs["replica_records"])
            deleted += 1
            if release:
                gone.append(decode(ReplicaRecord, value))
        return deleted, gone

    deleted, gone = env.write(op)
    for record in gone:
        released(record)
    return deleted


def put_checkpoint(env: IndexEnvironment, origin: str, seq: int, checkpoint_json: bytes) -> None:
    key = keys.join(origin, b"") + seq.to_bytes(8, "big")
    env.write(lambda txn: txn.put(key, checkpoint_json, db=env.dbs["audit_checkpoints"]))


def list_checkpoints(env: IndexEnvironment, origin: str) -> list[str]:
    """Every checkpoint ``origin`` sent, oldest first."""
    prefix = keys.join(origin, b"")
    found = []
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["audit_checkpoints"])
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                found.append(bytes(value).decode())
    return found
