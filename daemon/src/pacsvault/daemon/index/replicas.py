"""What this appliance keeps for its peer: the peer's replica records, its audit checkpoints and
the key they must be signed with.

The shards themselves are files (replication.shard_store); these are the
index entries that say which instances they belong to, written only once the
shards are verified and flushed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.index import keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import LegalHold, LostReplica, WitnessKey, decode, encode
from pacsvault.v1 import peer_pb2

ReplicaRecord = peer_pb2.ReplicaRecord


def put_records(env: IndexEnvironment, origin: str, records: list[ReplicaRecord]) -> None:
    """Records instances whose shards are verified and flushed; a replica reported lost is whole again."""
    def op(txn: lmdb.Transaction) -> None:
        for record in records:
            key = keys.join(origin, record.sop_instance_uid)
            txn.put(key, encode(record), db=env.dbs["replica_records"])
            txn.delete(key, db=env.dbs["lost_replicas"])

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
                   released: Callable[[ReplicaRecord], None]) -> tuple[int, int]:
    """Forgets the named instances in one transaction; ``released`` hears of each whose blob goes too.

    Instances of a study the peer placed under legal hold are kept. Returns
    (records deleted, records kept for a hold).
    """

    def op(txn: lmdb.Transaction) -> tuple[int, int, list[ReplicaRecord]]:
        deleted, held, gone = 0, 0, []
        for sop_uid, release in wanted:
            key = keys.join(origin, sop_uid)
            value = txn.get(key, db=env.dbs["replica_records"])
            if value is None:
                continue  # never arrived, or deleted by an earlier try
            record = decode(ReplicaRecord, value)
            if txn.get(keys.join(origin, record.study_instance_uid), db=env.dbs["peer_holds"]) is not None:
                held += 1  # under legal hold here too: kept, whatever the peer asks
                continue
            txn.delete(key, db=env.dbs["replica_records"])
            txn.delete(key, db=env.dbs["lost_replicas"])
            deleted += 1
            if release:
                gone.append(record)
        return deleted, held, gone

    deleted, held, gone = env.write(op, reserve_ok=True)
    for record in gone:
        released(record)
    return deleted, held


@dataclass(frozen=True)
class CheckpointKept:
    """What ``keep_checkpoint`` found: the key pinned for the origin, and what was held for the number."""

    pinned_key: bytes
    held: bytes | None  # the checkpoint already held for that number, if one was
    stored: bool


def keep_checkpoint(env: IndexEnvironment, origin: str, seq: int, signer_key: bytes, checkpoint_json: bytes,
                    now: float) -> CheckpointKept:
    """In one transaction: pins ``signer_key`` for ``origin`` when none is pinned yet, then stores
    the checkpoint only if it was signed under the pinned key and nothing is held for ``seq``.

    Never replaces a checkpoint: the witness is append-only.
    """
    key = _checkpoint_key(origin, seq)

    def op(txn: lmdb.Transaction) -> CheckpointKept:
        pinned = txn.get(origin.encode(), db=env.dbs["witness_keys"])
        if pinned is None:
            txn.put(origin.encode(), encode(WitnessKey(public_key=signer_key, pinned_at=now)),
                    db=env.dbs["witness_keys"])
            pinned_key = signer_key
        else:
            pinned_key = bytes(decode(WitnessKey, pinned).public_key)
        if pinned_key != signer_key:
            return CheckpointKept(pinned_key, None, stored=False)
        held = txn.get(key, db=env.dbs["audit_checkpoints"])
        if held is not None:
            return CheckpointKept(pinned_key, bytes(held), stored=False)
        txn.put(key, checkpoint_json, db=env.dbs["audit_checkpoints"])
        return CheckpointKept(pinned_key, None, stored=True)

    return env.write(op)


def list_checkpoints(env: IndexEnvironment, origin: str, min_seq: int = 0,
                     limit: int | None = None) -> list[tuple[int, str]]:
    """``origin``'s checkpoints numbered ``min_seq`` and later, oldest first, as (number, JSON)."""
    prefix = keys.join(origin, b"")
    found: list[tuple[int, str]] = []
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["audit_checkpoints"])
        if cursor.set_range(_checkpoint_key(origin, max(0, min_seq))):
            for key, value in cursor:
                if not key.startswith(prefix) or (limit is not None and len(found) >= limit):
                    break
                found.append((int.from_bytes(key[len(prefix):], "big"), bytes(value).decode()))
    return found


def _checkpoint_key(origin: str, seq: int) -> bytes:
    return keys.join(origin, b"") + seq.to_bytes(8, "big")


# -- replicas this appliance cannot rebuild for its peer ------------------------------


def note_lost(env: IndexEnvironment, origin: str, lost: dict[bytes, str], now: float) -> int:
    """Marks the peer's instances whose replica (by its name's hash) cannot be rebuilt here
    (``lost``: name hash -> why), so the peer learns of them and sends them again. One scan of
    the peer's records: rare (a scrub pass that found such blobs). Returns how many instances."""
    if not lost:
        return 0
    prefix = keys.join(origin, b"")

    def op(txn: lmdb.Transaction) -> int:
        marked = 0
        cursor = txn.cursor(db=env.dbs["replica_records"])
        if not cursor.set_range(prefix):
            return 0
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            record = decode(ReplicaRecord, value)
            name = bytes.fromhex(record.digest.hash) if record.digest.hash else b""
            if name in lost:
                entry = LostReplica(sop_instance_uid=record.sop_instance_uid, digest=name,
                                    size_bytes=record.digest.size_bytes, reported_at=now, reason=lost[name][:500])
                txn.put(bytes(key), encode(entry), db=env.dbs["lost_replicas"])
                marked += 1
        return marked

    return env.write(op, reserve_ok=True)


def list_lost(env: IndexEnvironment, origin: str, limit: int = 10_000) -> list[LostReplica]:
    prefix = keys.join(origin, b"")
    found: list[LostReplica] = []
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["lost_replicas"])
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix) or len(found) >= limit:
                    break
                found.append(decode(LostReplica, value))
    return found


def lost_count(env: IndexEnvironment) -> int:
    with env.read() as txn:
        return int(txn.stat(env.dbs["lost_replicas"])["entries"])


# -- legal holds the peer placed on its studies ----------------------------------------


def set_peer_hold(env: IndexEnvironment, origin: str, hold: LegalHold | None, study_uid: str) -> None:
    """Places (``hold``) or lifts (None) the peer's hold on one of its studies."""
    key = keys.join(origin, study_uid)

    def op(txn: lmdb.Transaction) -> None:
        if hold is None:
            txn.delete(key, db=env.dbs["peer_holds"])
        else:
            txn.put(key, encode(hold), db=env.dbs["peer_holds"])

    env.write(op, reserve_ok=True)


def peer_holds(env: IndexEnvironment, origin: str) -> list[LegalHold]:
    prefix = keys.join(origin, b"")
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["peer_holds"])
        found = []
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                found.append(decode(LegalHold, value))
        return found
