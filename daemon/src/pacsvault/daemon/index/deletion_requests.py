"""Study deletions waiting for a second admin, keyed by request id; the reason sealed (it may name a patient)."""

from __future__ import annotations

import lmdb

from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import DeletionRequest, decode

__all__ = ["all_requests", "forget_lapsed", "get", "put", "take"]

_DB = "deletion_requests"


def put(env: IndexEnvironment, request: DeletionRequest) -> None:
    key = request.request_id.encode()
    value = env.sealer.encode(request, _DB, key)
    env.write(lambda txn: txn.put(key, value, db=env.dbs[_DB]))


def get(env: IndexEnvironment, request_id: str) -> DeletionRequest | None:
    key = request_id.encode()
    with env.read() as txn:
        value = txn.get(key, db=env.dbs[_DB])
    return None if value is None else env.sealer.decode(DeletionRequest, value, _DB, key)


def take(env: IndexEnvironment, request_id: str) -> bool:
    """Removes a request; False when it was gone already (approved by someone else meanwhile)."""

    def op(txn: lmdb.Transaction) -> bool:
        return bool(txn.delete(request_id.encode(), db=env.dbs[_DB]))

    return env.write(op)


def all_requests(env: IndexEnvironment) -> list[DeletionRequest]:
    with env.read() as txn:
        found = [env.sealer.decode(DeletionRequest, v, _DB, bytes(k)) for k, v in txn.cursor(db=env.dbs[_DB])]
    return sorted(found, key=lambda r: r.requested_at)


def forget_lapsed(env: IndexEnvironment, now: float) -> int:
    """Removes requests nobody approved in time; how many."""

    def op(txn: lmdb.Transaction) -> int:
        # expires_at is not sealed: nothing is opened to find what lapsed.
        lapsed = [bytes(k) for k, v in txn.cursor(db=env.dbs[_DB]) if decode(DeletionRequest, v).expires_at <= now]
        for key in lapsed:
            txn.delete(key, db=env.dbs[_DB])
        return len(lapsed)

    return env.write(op)
