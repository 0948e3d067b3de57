"""The integrity books: blobs found bad and not repaired, reads that failed their check, the
local scrub's place and tallies. Shared by every process (a worker's read that failed shows
in the back office's health and metrics)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from pacsvault.daemon.index import keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import IntegrityProblem, ScrubState, decode, encode

_SCRUB_STATE = b"scrub_state"
_READ_FAILURES = b"integrity_read_failures"  # count, repaired, last time
_READS = struct.Struct(">QQd")


@dataclass(frozen=True)
class ReadFailures:
    count: int = 0
    repaired: int = 0
    last_at: float = 0.0


def note_problem(env: IndexEnvironment, problem: IntegrityProblem) -> None:
    key = keys.blob_key(problem.digest_function, problem.digest)
    env.write(lambda txn: txn.put(key, encode(problem), db=env.dbs["integrity_problems"]), reserve_ok=True)


def clear_problem(env: IndexEnvironment, blob_key: bytes) -> bool:
    """Forgets a problem (repaired, or its blob deleted); False when none was noted."""
    with env.read() as txn:
        if txn.get(blob_key, db=env.dbs["integrity_problems"]) is None:
            return False
    return bool(env.write(lambda txn: txn.delete(blob_key, db=env.dbs["integrity_problems"]), reserve_ok=True))


def problems(env: IndexEnvironment, limit: int = 1000) -> list[IntegrityProblem]:
    with env.read() as txn:
        found = []
        for _, value in txn.cursor(db=env.dbs["integrity_problems"]):
            found.append(decode(IntegrityProblem, value))
            if len(found) >= limit:
                break
        return found


def problem_count(env: IndexEnvironment) -> int:
    with env.read() as txn:
        return int(txn.stat(env.dbs["integrity_problems"])["entries"])


def note_read_failure(env: IndexEnvironment, repaired: bool, now: float) -> None:
    def op(txn: lmdb.Transaction) -> None:
        raw = txn.get(_READ_FAILURES, db=env.dbs["meta"])
        count, fixed, _ = _READS.unpack(raw) if raw else (0, 0, 0.0)
        txn.put(_READ_FAILURES, _READS.pack(count + 1, fixed + int(repaired), now), db=env.dbs["meta"])

    env.write(op, reserve_ok=True)


def read_failures(env: IndexEnvironment) -> ReadFailures:
    with env.read() as txn:
        raw = txn.get(_READ_FAILURES, db=env.dbs["meta"])
    return ReadFailures(*_READS.unpack(raw)) if raw else ReadFailures()


def scrub_state(env: IndexEnvironment) -> ScrubState:
    with env.read() as txn:
        raw = txn.get(_SCRUB_STATE, db=env.dbs["meta"])
    return decode(ScrubState, raw) if raw else ScrubState()


def update_scrub_state(env: IndexEnvironment, change: Callable[[ScrubState], None]) -> ScrubState:
    """Applies ``change`` to the stored state in one transaction; returns the new state."""

    def op(txn: lmdb.Transaction) -> ScrubState:
        raw = txn.get(_SCRUB_STATE, db=env.dbs["meta"])
        state = decode(ScrubState, raw) if raw else ScrubState()
        change(state)
        txn.put(_SCRUB_STATE, encode(state), db=env.dbs["meta"])
        return state

    return env.write(op, reserve_ok=True)
