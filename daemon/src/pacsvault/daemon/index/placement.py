"""Index records of where things are: volumes, blobs per volume, studies per
tier in order of coldness, and moves in progress.

These change in the same transactions as the instances they follow: ingest
(a new blob on a volume) and the tier mover (a blob switching volume).
"""

from __future__ import annotations

from collections.abc import Iterator

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


def save_volume(env: IndexEnvironment, record: VolumeRecord) -> None:
    def op(txn: lmdb.Transaction) -> None:
        txn.put(record.volume_id.encode(), encode(record), db=env.dbs["volumes"])

    env.write(op)


def move_intents(env: IndexEnvironment) -> list[MoveIntent]:
    with env.read() as txn:
        return [decode(MoveIntent, v) for _, v in txn.cursor(db=env.dbs["moves"])]


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
