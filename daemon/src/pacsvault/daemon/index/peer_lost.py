"""Instances the peer reported it cannot rebuild (``replication.lost``), and their re-sending.

``reconcile`` takes the peer's current list: an instance newly on it is
queued in the outbox again (same transaction), one no longer on it is
forgotten (the peer holds a good copy again). Health counts what is left.
"""

from __future__ import annotations

import lmdb

from pacsvault.daemon.digest import DigestFunction
from pacsvault.daemon.index import keys, outbox
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord, LostReplica, OutboxEntry, decode, encode


def reconcile(env: IndexEnvironment, reported: dict[str, LostReplica], now: float) -> int:
    """Brings ``peer_lost`` in line with the peer's list; returns how many instances were queued."""
    with env.read() as txn:
        known = {bytes(k).decode() for k in txn.cursor(db=env.dbs["peer_lost"]).iternext(values=False)}
    if known == set(reported):
        return 0  # the usual case, every probe: nothing written

    def op(txn: lmdb.Transaction) -> int:
        queued = 0
        for sop_uid in known - set(reported):
            txn.delete(sop_uid.encode(), db=env.dbs["peer_lost"])
        for sop_uid, record in reported.items():
            if sop_uid in known:
                continue
            txn.put(sop_uid.encode(), encode(record), db=env.dbs["peer_lost"])
            value = txn.get(sop_uid.encode(), db=env.dbs["instances"])
            if value is None:
                continue  # deleted here since: nothing to send
            instance = decode(InstanceRecord, value)
            blob_value = txn.get(keys.blob_key(DigestFunction.BLAKE3, instance.digest), db=env.dbs["blobs"])
            size = decode(BlobRecord, blob_value).size_bytes if blob_value else instance.size_bytes
            outbox.append(txn, env, OutboxEntry(sop_instance_uid=sop_uid, digest_function=int(DigestFunction.BLAKE3),
                                                digest=instance.digest, size_bytes=size, enqueued_at=now))
            queued += 1
        return queued

    return env.write(op, reserve_ok=True)


def listed(env: IndexEnvironment, limit: int = 100) -> list[LostReplica]:
    with env.read() as txn:
        found = []
        for _, value in txn.cursor(db=env.dbs["peer_lost"]):
            found.append(decode(LostReplica, value))
            if len(found) >= limit:
                break
        return found


def count(env: IndexEnvironment) -> int:
    with env.read() as txn:
        return int(txn.stat(env.dbs["peer_lost"])["entries"])
