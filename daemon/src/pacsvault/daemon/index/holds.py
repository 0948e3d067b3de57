"""Legal holds: studies no delete passes (here, and through the outbox at the peer)."""

from __future__ import annotations

import lmdb

from pacsvault.daemon.errors import NotFound
from pacsvault.daemon.index import outbox, trash
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import LegalHold, OutboxEntry, decode, encode


def place(env: IndexEnvironment, hold: LegalHold, replicate: bool) -> LegalHold:
    """Holds a study that is stored (or in the trash); NotFound otherwise. Placed again, the newer
    reason stands."""
    uid = hold.study_instance_uid

    def op(txn: lmdb.Transaction) -> LegalHold:
        if txn.get(uid.encode(), db=env.dbs["studies"]) is None and not trash.study_in_trash(txn, env, uid):
            raise NotFound(f"no study with Study Instance UID {uid} (stored or in the trash)")
        txn.put(uid.encode(), encode(hold), db=env.dbs["legal_holds"])
        if replicate:
            outbox.append(txn, env, OutboxEntry(hold_study_instance_uid=uid, hold=True, hold_reason=hold.reason,
                                                enqueued_at=hold.placed_at))
        return hold

    return env.write(op, reserve_ok=True)


def lift(env: IndexEnvironment, study_uid: str, now: float, replicate: bool) -> LegalHold:
    """Removes a hold; NotFound when the study has none."""

    def op(txn: lmdb.Transaction) -> LegalHold:
        value = txn.get(study_uid.encode(), db=env.dbs["legal_holds"])
        if value is None:
            raise NotFound(f"study {study_uid} is under no legal hold")
        txn.delete(study_uid.encode(), db=env.dbs["legal_holds"])
        if replicate:
            outbox.append(txn, env, OutboxEntry(hold_study_instance_uid=study_uid, hold=False, enqueued_at=now))
        return decode(LegalHold, value)

    return env.write(op, reserve_ok=True)


def held(txn: lmdb.Transaction, env: IndexEnvironment, study_uid: str) -> LegalHold | None:
    value = txn.get(study_uid.encode(), db=env.dbs["legal_holds"])
    return None if value is None else decode(LegalHold, value)


def is_held(env: IndexEnvironment, study_uid: str) -> bool:
    with env.read() as txn:
        return held(txn, env, study_uid) is not None


def listed(env: IndexEnvironment) -> list[LegalHold]:
    with env.read() as txn:
        return [decode(LegalHold, v) for _, v in txn.cursor(db=env.dbs["legal_holds"])]
