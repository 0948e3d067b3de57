"""The trash: deleted instances, out of the live index but restorable until their purge time.

A delete (of a study, a series or an instance) detaches each instance from
the live index (``hierarchy.detach``: find and retrieval no longer see it)
and keeps it here with the records above it, in one transaction. Its blob
keeps its reference, so it stays on disk and at the peer. ``restore`` puts
them back; ``purge`` (after ``[retention] soft_delete_days``) releases the
blob references -- a blob whose last one goes is doomed, and its copy is
destroyed key slots first -- and queues the deletion for the peer.

Keys: ``trash`` by SOP Instance UID; ``trash_by_target`` by what the delete
named (and by study, ``TRASH_OF_STUDY``), ``trash_by_purge`` by purge time.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import lmdb

from pacsvault.daemon.digest import DigestFunction
from pacsvault.daemon.errors import NotFound
from pacsvault.daemon.index import hierarchy, keys, outbox, placement
from pacsvault.daemon.index.catalog import STORED_BYTES, _add_counter
from pacsvault.daemon.index.keys import TRASH_OF_STUDY
from pacsvault.daemon.index.lmdb_env import IndexEnvironment, prefix_keys
from pacsvault.daemon.index.records import (
    BlobRecord,
    InstanceRecord,
    OutboxEntry,
    SeriesRecord,
    StudyRecord,
    TrashedInstance,
    decode,
    encode,
)

LEVELS = ("study", "series", "instance")
# The field that holds the UID a delete (or an undelete) names, by level.
UID_FIELDS = {"study": "study_instance_uid", "series": "series_instance_uid", "instance": "sop_instance_uid"}
_MS = struct.Struct(">Q")
# Checks a delete must pass (legal hold, retention), given the study as stored: raise to refuse.
DeleteCheck = Callable[[lmdb.Transaction, StudyRecord], None]


@dataclass
class Trashed:
    study_instance_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)
    purge_after: float = 0.0


@dataclass
class Restored:
    restored: int = 0
    superseded: int = 0


@dataclass
class Purged:
    instances: int = 0
    blobs_released: int = 0
    held: int = 0


@dataclass
class DeletedGroup:
    level: str
    uid: str
    study_instance_uid: str
    instances: int
    reason: str
    deleted_by: str
    trashed_at: float
    purge_after: float


def move_to_trash(env: IndexEnvironment, level: str, uid: str, now: float, purge_after: float, reason: str,
                  by: str, check: DeleteCheck) -> Trashed:
    """Detaches every instance ``level``/``uid`` names into the trash, in one transaction; NotFound
    when it names nothing live, whatever ``check`` raises when it refuses (nothing changed then)."""

    def op(txn: lmdb.Transaction) -> Trashed:
        sop_uids, study = _members(txn, env, level, uid)
        check(txn, study)
        trashed = Trashed(study.study_instance_uid, purge_after=purge_after)
        for sop_uid in sop_uids:
            old = txn.get(sop_uid.encode(), db=env.dbs["trash"])
            if old is not None:  # deleted before, stored again since: the older copy goes for good
                _forget(txn, env, decode(TrashedInstance, old), release=True, replicate=False, now=now)
            detached = hierarchy.detach(txn, env, sop_uid)
            assert detached is not None
            entry = TrashedInstance(
                instance=detached.instance, patient_key=detached.patient_key,
                patient_value=detached.patient_value, study_value=detached.study_value,
                series_value=detached.series_value, trashed_at=now, purge_after=purge_after, reason=reason,
                deleted_by=by, deleted_level=level, deleted_uid=uid)
            _put(txn, env, entry)
            trashed.sop_instance_uids.append(sop_uid)
        return trashed

    return env.write(op, reserve_ok=True)


def check_deletable(env: IndexEnvironment, level: str, uid: str, check: DeleteCheck) -> None:
    """What ``move_to_trash`` would refuse, without changing anything (a deletion asked for now and
    approved later is judged again then)."""
    with env.read() as txn:
        _, study = _members(txn, env, level, uid)
        check(txn, study)


def _members(txn: lmdb.Transaction, env: IndexEnvironment, level: str, uid: str) -> tuple[list[str], StudyRecord]:
    db = env.dbs
    if level == "instance":
        value = txn.get(uid.encode(), db=db["instances"])
        if value is None:
            raise NotFound(f"no instance with SOP Instance UID {uid}")
        sop_uids, study_uid = [uid], decode(InstanceRecord, value).study_instance_uid
    elif level == "series":
        value = txn.get(uid.encode(), db=db["series"])
        if value is None:
            raise NotFound(f"no series with Series Instance UID {uid}")
        study_uid = decode(SeriesRecord, value).study_instance_uid
        sop_uids = [keys.last_part(k) for k in prefix_keys(txn, db["series_instances"], keys.join(uid, b""))]
    else:
        study_uid, sop_uids = uid, []
        if txn.get(uid.encode(), db=db["studies"]) is None:
            raise NotFound(f"no study with Study Instance UID {uid}")
        for series_key in prefix_keys(txn, db["study_series"], keys.join(uid, b"")):
            series_uid = keys.last_part(series_key)
            sop_uids += [keys.last_part(k) for k in prefix_keys(txn, db["series_instances"], keys.join(series_uid, b""))]
    return sop_uids, decode(StudyRecord, txn.get(study_uid.encode(), db=db["studies"]))


def restore(env: IndexEnvironment, level: str, uid: str, now: float) -> Restored:
    """Puts back every instance a delete of ``level``/``uid`` trashed; NotFound when there is none.
    An instance stored again meanwhile under the same UID is kept, the trashed one let go."""

    def op(txn: lmdb.Transaction) -> Restored:
        entries = [decode(TrashedInstance, txn.get(keys.last_part(k).encode(), db=env.dbs["trash"]))
                   for k in list(prefix_keys(txn, env.dbs["trash_by_target"], keys.join(level, uid, b"")))]
        if not entries:
            raise NotFound(f"nothing deleted as {level} {uid} is in the trash (purged already, or never deleted)")
        for entry in entries:  # every conflict found before anything changes
            hierarchy.check_attachable(txn, env, entry)
        done = Restored()
        for entry in entries:
            superseded = txn.get(entry.instance.sop_instance_uid.encode(), db=env.dbs["instances"]) is not None
            _forget(txn, env, entry, release=superseded, replicate=False, now=now)
            if superseded:
                done.superseded += 1
            else:
                hierarchy.attach(txn, env, entry)
                done.restored += 1
        return done

    return env.write(op)


def due(env: IndexEnvironment, now: float, limit: int = 500) -> list[str]:
    """SOP Instance UIDs whose purge time has come, oldest first."""
    found = []
    with env.read() as txn:
        for key in txn.cursor(db=env.dbs["trash_by_purge"]).iternext(values=False):
            if _MS.unpack_from(key)[0] / 1000 > now or len(found) >= limit:
                break
            found.append(bytes(key)[_MS.size :].decode())
    return found


def purge(env: IndexEnvironment, sop_uids: list[str], now: float, replicate: bool,
          held: Callable[[lmdb.Transaction, str], bool]) -> Purged:
    """Lets the named trashed instances go for good, but for those whose study is ``held``."""

    def op(txn: lmdb.Transaction) -> Purged:
        done = Purged()
        for sop_uid in sop_uids:
            value = txn.get(sop_uid.encode(), db=env.dbs["trash"])
            if value is None:
                continue
            entry = decode(TrashedInstance, value)
            if held(txn, entry.instance.study_instance_uid):
                done.held += 1
                continue
            done.blobs_released += _forget(txn, env, entry, release=True, replicate=replicate, now=now)
            done.instances += 1
        return done

    return env.write(op, reserve_ok=True)


def _put(txn: lmdb.Transaction, env: IndexEnvironment, entry: TrashedInstance) -> None:
    sop = entry.instance.sop_instance_uid
    txn.put(sop.encode(), encode(entry), db=env.dbs["trash"])
    for level, uid in ((entry.deleted_level, entry.deleted_uid), (TRASH_OF_STUDY, entry.instance.study_instance_uid)):
        txn.put(keys.join(level, uid, sop), b"", db=env.dbs["trash_by_target"])
    txn.put(_purge_key(entry.purge_after, sop), b"", db=env.dbs["trash_by_purge"])


def _forget(txn: lmdb.Transaction, env: IndexEnvironment, entry: TrashedInstance, release: bool,
            replicate: bool, now: float) -> int:
    """Removes a trash entry; with ``release`` its blob reference goes too (and with ``replicate``
    the peer is told). Returns 1 when that was the blob's last reference (the blob is doomed)."""
    sop = entry.instance.sop_instance_uid
    txn.delete(sop.encode(), db=env.dbs["trash"])
    for level, uid in ((entry.deleted_level, entry.deleted_uid), (TRASH_OF_STUDY, entry.instance.study_instance_uid)):
        txn.delete(keys.join(level, uid, sop), db=env.dbs["trash_by_target"])
    txn.delete(_purge_key(entry.purge_after, sop), db=env.dbs["trash_by_purge"])
    if not release:
        return 0
    last = release_blob(txn, env, entry.instance.digest)
    if replicate:
        outbox.append(txn, env, OutboxEntry(
            sop_instance_uid=sop, digest_function=DigestFunction.BLAKE3, digest=entry.instance.digest,
            enqueued_at=now, delete=True, release_blob=bool(last)))
    return last


def release_blob(txn: lmdb.Transaction, env: IndexEnvironment, digest: bytes) -> int:
    """One reference fewer on a blob; at none it is doomed (its copy destroyed after the commit)."""
    key = keys.blob_key(DigestFunction.BLAKE3, digest)
    value = txn.get(key, db=env.dbs["blobs"])
    if value is None:
        return 0
    blob = decode(BlobRecord, value)
    blob.refcount -= 1
    if blob.refcount > 0:
        txn.put(key, encode(blob), db=env.dbs["blobs"])
        return 0
    txn.delete(key, db=env.dbs["blobs"])
    placement.count_blob_on_volume(txn, env, blob, -1)
    _add_counter(txn, env.dbs["meta"], STORED_BYTES, -blob.size_bytes)
    txn.put(key, encode(blob), db=env.dbs["doomed_blobs"])
    txn.delete(key, db=env.dbs["integrity_problems"])
    return 1


def groups(env: IndexEnvironment) -> list[DeletedGroup]:
    """What each delete put in the trash, one group per delete target."""
    found: dict[tuple[str, str], DeletedGroup] = {}
    with env.read() as txn:
        for _, value in txn.cursor(db=env.dbs["trash"]):
            entry = decode(TrashedInstance, value)
            target = (entry.deleted_level, entry.deleted_uid)
            group = found.get(target)
            if group is None:
                found[target] = DeletedGroup(entry.deleted_level, entry.deleted_uid,
                                             entry.instance.study_instance_uid, 1, entry.reason, entry.deleted_by,
                                             entry.trashed_at, entry.purge_after)
            else:
                group.instances += 1
    return sorted(found.values(), key=lambda g: g.trashed_at)


def study_in_trash(txn: lmdb.Transaction, env: IndexEnvironment, study_uid: str) -> bool:
    return next(iter(prefix_keys(txn, env.dbs["trash_by_target"], keys.join(TRASH_OF_STUDY, study_uid, b""))),
                None) is not None


def instance_or_trashed(env: IndexEnvironment, sop_uid: str) -> tuple[InstanceRecord, BlobRecord]:
    """The instance, live or in the trash, and its blob (what replication sends: the trash is still
    replicated). NotFound when it is neither."""
    with env.read() as txn:
        value = txn.get(sop_uid.encode(), db=env.dbs["instances"])
        instance = decode(InstanceRecord, value) if value is not None else None
        if instance is None:
            trashed = txn.get(sop_uid.encode(), db=env.dbs["trash"])
            if trashed is None:
                raise NotFound(f"no instance with SOP Instance UID {sop_uid}")
            instance = decode(TrashedInstance, trashed).instance
        blob = txn.get(keys.blob_key(DigestFunction.BLAKE3, instance.digest), db=env.dbs["blobs"])
        if blob is None:
            raise NotFound(f"instance {sop_uid} has no blob record")
        return instance, decode(BlobRecord, blob)


def _purge_key(purge_after: float, sop_uid: str) -> bytes:
    return _MS.pack(max(0, int(purge_after * 1000))) + sop_uid.encode()
