"""Key rotation's books: which key version every data key is wrapped under, and what is left to do.

``rewrapped_to`` is the version the last complete re-wrap pass reached. A
blob sealed under an older version after a rotation began (a serving process
that had not yet read the new keyring) is listed in ``rewrap_pending`` by the
commit that indexes it, so the pass cannot miss it: the pass is complete only
when that list is empty too.
"""

from __future__ import annotations

import lmdb

from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, decode

_REWRAPPED_TO = b"keys_rewrapped_to_version"
# The active key version as the rotating process last set it; ingest compares its own with it.
ACTIVE_VERSION = b"keys_active_version"


def rewrapped_to(env: IndexEnvironment) -> int:
    with env.read() as txn:
        raw = txn.get(_REWRAPPED_TO, db=env.dbs["meta"])
    # An index without the mark has only ever wrapped under the first version.
    return int(raw) if raw else 1


def set_rewrapped_to(env: IndexEnvironment, version: int) -> None:
    env.write(lambda txn: txn.put(_REWRAPPED_TO, str(version).encode(), db=env.dbs["meta"]))


def active_version(txn: lmdb.Transaction, env: IndexEnvironment) -> int:
    raw = txn.get(ACTIVE_VERSION, db=env.dbs["meta"])
    return int(raw) if raw else 1


def set_active_version(env: IndexEnvironment, version: int) -> None:
    env.write(lambda txn: txn.put(ACTIVE_VERSION, str(version).encode(), db=env.dbs["meta"]))


def note_sealed_under(txn: lmdb.Transaction, env: IndexEnvironment, blob_key: bytes, version: int) -> None:
    """Inside ingest's commit: a new blob sealed under ``version``; listed for the pass when stale."""
    if version and version < active_version(txn, env):
        txn.put(blob_key, b"", db=env.dbs["rewrap_pending"])


def blob_page(env: IndexEnvironment, after: bytes, limit: int) -> list[tuple[bytes, BlobRecord]]:
    """Up to ``limit`` blob records with keys after ``after``, in key order."""
    with env.read() as txn:
        cursor = txn.cursor(db=env.dbs["blobs"])
        if not cursor.set_range(after):
            return []
        out = []
        for key, value in cursor:
            if key == after:
                continue
            out.append((bytes(key), decode(BlobRecord, value)))
            if len(out) >= limit:
                break
        return out


def pending(env: IndexEnvironment, limit: int) -> list[tuple[bytes, BlobRecord | None]]:
    """Blobs listed for the pass since it began (None: deleted since)."""
    with env.read() as txn:
        out: list[tuple[bytes, BlobRecord | None]] = []
        for key in txn.cursor(db=env.dbs["rewrap_pending"]).iternext(values=False):
            value = txn.get(key, db=env.dbs["blobs"])
            out.append((bytes(key), None if value is None else decode(BlobRecord, value)))
            if len(out) >= limit:
                break
        return out


def pending_done(env: IndexEnvironment, blob_keys: list[bytes]) -> None:
    env.write(lambda txn: [txn.delete(k, db=env.dbs["rewrap_pending"]) for k in blob_keys])
