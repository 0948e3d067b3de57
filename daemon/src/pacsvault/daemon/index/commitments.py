"""Storage Commitment requests waiting for their report (DICOM N-EVENT-REPORT).

Whoever answers one first claims it for a while (a lease): the serving
process whose association is still open, or else the back office, which
opens a new association. A claim that runs out (its owner died) frees the
request for the next one, so a report may be sent twice, never not at all;
requesters take a repeated Transaction UID as the same answer.
"""

from __future__ import annotations

import lmdb

from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import CommitmentRecord, decode, encode


def put(env: IndexEnvironment, record: CommitmentRecord) -> None:
    """Records a request (a repeated Transaction UID replaces the earlier one); durable on return."""
    env.write(lambda txn: txn.put(record.transaction_uid.encode(), encode(record), db=env.dbs["commitments"]))


def claim(env: IndexEnvironment, transaction_uid: str, owner: str, now: float,
          lease_s: float) -> CommitmentRecord | None:
    """The request, now claimed by ``owner`` until ``now + lease_s``; None when it is gone or someone
    else's claim still holds."""

    def op(txn: lmdb.Transaction) -> CommitmentRecord | None:
        record = _get(txn, env, transaction_uid)
        if record is None or (record.claimed_by not in ("", owner) and record.claimed_until > now):
            return None
        record.claimed_by, record.claimed_until = owner, now + lease_s
        txn.put(transaction_uid.encode(), encode(record), db=env.dbs["commitments"])
        return record

    return env.write(op)


def release(env: IndexEnvironment, transaction_uid: str, owner: str, next_attempt_at: float = 0.0,
            attempted: bool = False) -> None:
    """Gives the request up (to be answered by someone else, or by ``owner`` later)."""

    def op(txn: lmdb.Transaction) -> None:
        record = _get(txn, env, transaction_uid)
        if record is None or record.claimed_by != owner:
            return
        record.claimed_by, record.claimed_until = "", 0.0
        record.next_attempt_at = next_attempt_at
        record.attempts += int(attempted)
        txn.put(transaction_uid.encode(), encode(record), db=env.dbs["commitments"])

    env.write(op)


def finish(env: IndexEnvironment, transaction_uid: str) -> None:
    """The report was delivered (or given up on): forget the request."""
    env.write(lambda txn: txn.delete(transaction_uid.encode(), db=env.dbs["commitments"]))


def due(env: IndexEnvironment, now: float, limit: int = 100) -> list[CommitmentRecord]:
    """Requests nobody holds a claim on whose next try is due, oldest first by Transaction UID order."""
    found: list[CommitmentRecord] = []
    with env.read() as txn:
        for _, value in txn.cursor(db=env.dbs["commitments"]):
            record = decode(CommitmentRecord, value)
            if (not record.claimed_by or record.claimed_until <= now) and record.next_attempt_at <= now:
                found.append(record)
                if len(found) >= limit:
                    break
    return found


def get(env: IndexEnvironment, transaction_uid: str) -> CommitmentRecord | None:
    with env.read() as txn:
        return _get(txn, env, transaction_uid)


def _get(txn: lmdb.Transaction, env: IndexEnvironment, transaction_uid: str) -> CommitmentRecord | None:
    value = txn.get(transaction_uid.encode(), db=env.dbs["commitments"])
    return None if value is None else decode(CommitmentRecord, value)
