"""Index records of where things are: volumes, blobs per volume, studies per
tier in order of coldness, moves in progress, and what tiering was asked for
(pins, promotions, recorded reads).

These change in the same transactions as the instances they follow: ingest
(a new blob on a volume) and the tier mover (a blob switching volume).

Everything here is shared by every process of the daemon: a serving process
that learns something the others must know (a volume that failed, a study to
promote) writes it here, and the others read it on their next call. Changes
to the volume list bump a generation number (``volumes_generation``), so a
process can tell with one read whether its view of the volumes is stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import struct

import lmdb

from pacsvault.daemon.index import keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment, prefix_keys
from pacsvault.daemon.index.records import (
    BlobLocation,
    BlobRecord,
    MoveIntent,
    StudyRecord,
    VolumeRecord,
    decode,
    encode,
)


VOLUMES_GENERATION = b"volumes_generation"
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")


def count_blob_on_volume(txn: lmdb.Transaction, env: IndexEnvironment, blob: BlobRecord, sign: int) -> None:
    """Adds (sign=1) or removes (sign=-1) ``blob`` from its volume's books."""
    db = env.dbs
    volume_id = blob.location.volume_id
    key = keys.volume_blob_key(volume_id, blob.digest_function, blob.digest)
    if sign > 0:
        txn.put(key, b"", db=db["volume_blobs"])
    else:
        txn.delete(key, db=db["volume_blobs"])
    value = txn.get(volume_id.encode(), db=db["volumes"])
    if value is None:
        return
    volume = decode(VolumeRecord, value)
    volume.blob_count += sign
    volume.stored_bytes += sign * blob.stored_bytes
    txn.put(volume_id.encode(), encode(volume), db=db["volumes"])


def count_instance_on_tier(txn: lmdb.Transaction, env: IndexEnvironment, study: StudyRecord,
                           tier: str, sign: int) -> None:
    """Keeps study.tier_instances and the tier_lru index in step."""
    before = study.tier_instances.get(tier, 0)
    after = max(0, before + sign)
    key = keys.tier_lru_key(tier, study.last_access, study.study_instance_uid)
    if after:
        study.tier_instances[tier] = after
    else:
        study.tier_instances.pop(tier, None)
    if before == 0 and after > 0:
        txn.put(key, b"", db=env.dbs["tier_lru"])
    elif before > 0 and after == 0:
        txn.delete(key, db=env.dbs["tier_lru"])


def touch_study(txn: lmdb.Transaction, env: IndexEnvironment, study: StudyRecord, when: float) -> None:
    """Moves the study to ``when`` in the coldness order of every tier it is on."""
    if when <= study.last_access:
        return
    for tier in study.tier_instances:
        txn.delete(keys.tier_lru_key(tier, study.last_access, study.study_instance_uid), db=env.dbs["tier_lru"])
        txn.put(keys.tier_lru_key(tier, when, study.study_instance_uid), b"", db=env.dbs["tier_lru"])
    study.last_access = when


def coldest_studies(txn: lmdb.Transaction, env: IndexEnvironment, tier: str) -> Iterator[StudyRecord]:
    """Studies with instances on ``tier``, least recently accessed first, opened (an age rule may
    count from the study date)."""
    for key in prefix_keys(txn, env.dbs["tier_lru"], tier.encode() + keys.SEP):
        _, study_uid = keys.split_tier_lru_key(key)
        value = txn.get(study_uid.encode(), db=env.dbs["studies"])
        if value is not None:
            yield env.sealer.decode(StudyRecord, value, "studies", study_uid.encode())


def volume_blob_keys(txn: lmdb.Transaction, env: IndexEnvironment, volume_id: str) -> Iterator[bytes]:
    """Blob keys (function byte + digest) of every blob on one volume."""
    prefix = volume_id.encode() + keys.SEP
    for key in prefix_keys(txn, env.dbs["volume_blobs"], prefix):
        yield key[len(prefix) :]


def volumes(env: IndexEnvironment) -> list[VolumeRecord]:
    with env.read() as txn:
        return [decode(VolumeRecord, v) for _, v in txn.cursor(db=env.dbs["volumes"])]


def volume(env: IndexEnvironment, volume_id: str) -> VolumeRecord | None:
    """One volume's record (its blob count and stored bytes are kept in step with every move)."""
    with env.read() as txn:
        value = txn.get(volume_id.encode(), db=env.dbs["volumes"])
    return None if value is None else decode(VolumeRecord, value)


def volumes_with_generation(env: IndexEnvironment) -> tuple[int, list[VolumeRecord]]:
    """Every volume record and the generation they belong to, from one snapshot."""
    with env.read() as txn:
        return _generation(txn, env), [decode(VolumeRecord, v) for _, v in txn.cursor(db=env.dbs["volumes"])]


def volumes_generation(env: IndexEnvironment) -> int:
    """Grows with every change to a volume's record; one read, for a cheap staleness check."""
    with env.read() as txn:
        return _generation(txn, env)


def save_volume(env: IndexEnvironment, record: VolumeRecord) -> None:
    def op(txn: lmdb.Transaction) -> None:
        txn.put(record.volume_id.encode(), encode(record), db=env.dbs["volumes"])
        _bump_generation(txn, env)

    env.write(op, reserve_ok=True)


def update_volume(env: IndexEnvironment, volume_id: str, change: Callable[[VolumeRecord], bool]) -> VolumeRecord | None:
    """Applies ``change`` to the volume's current record in one transaction; ``change`` returns
    whether it changed anything (nothing is written, and no generation bumped, otherwise)."""

    def op(txn: lmdb.Transaction) -> VolumeRecord | None:
        value = txn.get(volume_id.encode(), db=env.dbs["volumes"])
        if value is None:
            return None
        record = decode(VolumeRecord, value)
        if change(record):
            txn.put(volume_id.encode(), encode(record), db=env.dbs["volumes"])
            _bump_generation(txn, env)
        return record

    return env.write(op, reserve_ok=True)


def _generation(txn: lmdb.Transaction, env: IndexEnvironment) -> int:
    raw = txn.get(VOLUMES_GENERATION, db=env.dbs["meta"])
    return _U64.unpack(raw)[0] if raw else 0


def _bump_generation(txn: lmdb.Transaction, env: IndexEnvironment) -> None:
    txn.put(VOLUMES_GENERATION, _U64.pack(_generation(txn, env) + 1), db=env.dbs["meta"])


def move_intents(env: IndexEnvironment) -> list[MoveIntent]:
    with env.read() as txn:
        return [decode(MoveIntent, v) for _, v in txn.cursor(db=env.dbs["moves"])]


def put_move_intents(env: IndexEnvironment, intents: list[MoveIntent]) -> None:
    """Records moves about to start, in one transaction, before any copy is made."""
    env.write(lambda txn: [txn.put(keys.blob_key(i.digest_function, i.digest), encode(i), db=env.dbs["moves"])
                           for i in intents])


def drop_move_intents(env: IndexEnvironment, intents: list[MoveIntent]) -> None:
    env.write(lambda txn: [txn.delete(keys.blob_key(i.digest_function, i.digest), db=env.dbs["moves"])
                           for i in intents], reserve_ok=True)


def blob(env: IndexEnvironment, blob_key: bytes) -> BlobRecord | None:
    with env.read() as txn:
        value = txn.get(blob_key, db=env.dbs["blobs"])
    return None if value is None else decode(BlobRecord, value)


def switch_blob(txn: lmdb.Transaction, env: IndexEnvironment, blob_key: bytes, from_volume_id: str, tier: str,
                volume_id: str) -> bool:
    """Points a moved blob at its new copy, inside the caller's transaction; False when the
    blob is gone or was moved meanwhile by someone else (theirs is kept)."""
    value = txn.get(blob_key, db=env.dbs["blobs"])
    if value is None:
        return False
    current = decode(BlobRecord, value)
    if current.location.volume_id != from_volume_id:
        return False
    relocate(txn, env, current, tier, volume_id, current.stored_bytes)
    return True


def study(env: IndexEnvironment, study_uid: str) -> StudyRecord | None:
    """The study as stored (PHI still sealed)."""
    with env.read() as txn:
        value = txn.get(study_uid.encode(), db=env.dbs["studies"])
    return None if value is None else decode(StudyRecord, value)


# -- what tiering was asked for ------------------------------------------------------


def record_reads(env: IndexEnvironment, reads: dict[str, float], promote: set[str]) -> None:
    """Recorded reads of studies (study UID -> when), and the studies read from a lower tier
    that should come back up, in one transaction."""

    def op(txn: lmdb.Transaction) -> None:
        for study_uid, when in reads.items():
            value = txn.get(study_uid.encode(), db=env.dbs["studies"])
            if value is not None:
                record = decode(StudyRecord, value)
                touch_study(txn, env, record, when)
                txn.put(study_uid.encode(), encode(record), db=env.dbs["studies"])
        for study_uid in promote:
            _request_promotion(txn, env, study_uid, reads.get(study_uid, 0.0))

    env.write(op)


def pin(env: IndexEnvironment, study_uid: str, until: str, now: float) -> StudyRecord | None:
    """Sets (or with '' clears) the study's pin, asking for its promotion in the same transaction;
    None when there is no such study."""

    def op(txn: lmdb.Transaction) -> StudyRecord | None:
        value = txn.get(study_uid.encode(), db=env.dbs["studies"])
        if value is None:
            return None
        record = decode(StudyRecord, value)
        record.pinned_until = until
        txn.put(study_uid.encode(), encode(record), db=env.dbs["studies"])
        if until:
            _request_promotion(txn, env, study_uid, now)
        return record

    return env.write(op)


def request_promotions(env: IndexEnvironment, reads: dict[str, float]) -> None:
    """Asks the mover to bring these studies to the first tier, counting each as read ``when``
    (a prefetched study is about to be needed: no age rule may demote it again meanwhile)."""
    record_reads(env, reads, set(reads))


def _request_promotion(txn: lmdb.Transaction, env: IndexEnvironment, study_uid: str, when: float) -> None:
    txn.put(study_uid.encode(), _F64.pack(when), db=env.dbs["promotions"])


def promotions(env: IndexEnvironment) -> list[str]:
    """Studies waiting to be promoted, the latest asked for first: the study a viewer opened last is
    the one someone waits for, and a large study asked for earlier must not take the room first."""
    with env.read() as txn:
        waiting = [(_F64.unpack(bytes(v))[0], bytes(k).decode()) for k, v in txn.cursor(db=env.dbs["promotions"])]
    return [study_uid for _, study_uid in sorted(waiting, key=lambda item: -item[0])]


def promotion_done(env: IndexEnvironment, study_uid: str) -> None:
    env.write(lambda txn: txn.delete(study_uid.encode(), db=env.dbs["promotions"]), reserve_ok=True)


def promotions_pending(env: IndexEnvironment) -> int:
    with env.read() as txn:
        return int(txn.stat(env.dbs["promotions"])["entries"])


def relocate(txn: lmdb.Transaction, env: IndexEnvironment, blob: BlobRecord, tier: str, volume_id: str,
             stored_bytes: int) -> None:
    """Points ``blob`` (as read in this transaction) at a new volume, keeping every count right."""
    old_tier = blob.location.tier
    count_blob_on_volume(txn, env, blob, -1)
    blob.location.CopyFrom(BlobLocation(tier=tier, volume_id=volume_id))
    blob.stored_bytes = stored_bytes
    count_blob_on_volume(txn, env, blob, +1)
    txn.put(keys.blob_key(blob.digest_function, blob.digest), encode(blob), db=env.dbs["blobs"])
    study_value = txn.get(blob.study_instance_uid.encode(), db=env.dbs["studies"])
    if old_tier != tier and study_value is not None:
        study = decode(StudyRecord, study_value)
        for _ in range(max(1, blob.refcount)):
            count_instance_on_tier(txn, env, study, old_tier, -1)
            count_instance_on_tier(txn, env, study, tier, +1)
        txn.put(blob.study_instance_uid.encode(), encode(study), db=env.dbs["studies"])
