"""``pacsvault check``: every inconsistency between the index, the volumes and the replication
books, by class, and with ``--repair`` what can be put right safely.

Classes (``Finding.kind``):

* orphan          a blob file no record names (a crash between write and commit, an old bug)
* temp-file       a write a crash left in a volume's ``tmp/``
* dangling        an index entry whose blob is on no volume (or an instance without a blob record)
* misplaced       a blob found on another volume than its record names
* refcount        a blob's count differs from the instances (live and in the trash) naming it
* replica-without-shards  a replica kept for the peer with fewer than k shards here
* stale-outbox    an outbox entry for a blob the index no longer has

Repairs: orphans and temp files go only when older than ``[integrity] orphan_grace_s``, and an
orphan only under its blob's cross-process lock, after looking again that no record names it
(a store holds that lock from writing the blob to committing it, so none can be in between);
a dangling entry is repaired from another local copy or the peer, and never dropped; a misplaced
blob is pointed at where it is; a refcount is set to what the instances say (at zero the blob is
destroyed as a deleted one); a replica without shards is reported to the peer, which sends it
again; a stale outbox entry is removed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pacsvault.daemon.digest import DigestFunction
from pacsvault.daemon.index import consistency, keys, outbox, replicas
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobLocation, BlobRecord
from pacsvault.daemon.ingest import BlobLocking
from pacsvault.daemon.integrity.blob_repair import BlobRepair
from pacsvault.daemon.retrieval import address
from pacsvault.daemon.storage.object_volume import ObjectStoreVolume
from pacsvault.daemon.storage.tiered import TieredBlobStore, Volume

log = logging.getLogger(__name__)
KINDS = ("orphan", "temp-file", "dangling", "misplaced", "refcount", "replica-without-shards", "stale-outbox")


@dataclass
class Finding:
    kind: str
    subject: str
    detail: str
    action: str = ""
    # What a repair needs (not shown).
    volume: Volume | None = field(default=None, repr=False)
    path: Path | None = field(default=None, repr=False)
    blob: BlobRecord | None = field(default=None, repr=False)
    key: bytes = field(default=b"", repr=False)
    number: int = 0
    # An object in an object store has no path: when it was written, for the grace period.
    written_at: float = field(default=0.0, repr=False)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    blobs_examined: int = 0
    files_examined: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    @property
    def left(self) -> int:
        return sum(1 for f in self.findings if f.action.startswith(("left", "failed")))


@dataclass
class PeerBooks:
    """The replication side of a check: the peer's name, its records here and the shards."""

    peer: str
    k: int
    shard_count: Callable[[bytes], int]  # how many shards of a replica (by name hash) are here


class Checker:
    def __init__(self, env: IndexEnvironment, store: TieredBlobStore, catalog: Catalog, locks: BlobLocking,
                 repair: BlobRepair, destroy_doomed: Callable[[], int], grace_s: float,
                 peer_books: PeerBooks | None = None, clock: Callable[[], float] = time.time) -> None:
        self._env, self._store, self._catalog, self._locks = env, store, catalog, locks
        self._repair, self._destroy_doomed, self._grace, self._peer = repair, destroy_doomed, grace_s, peer_books
        self._clock = clock

    def check(self) -> Report:
        self._store.refresh()
        report = Report()
        report.findings += [f for f in self._index_side(report) if self._still_so(f)]
        report.findings += [f for f in self._volume_side(report) if self._still_so(f)]
        report.findings += self._replication_side()
        return report

    def _still_so(self, f: Finding) -> bool:
        """A finding is looked at again once the walk is over: a move, a store or a delete that ran
        during the walk has named, moved or removed its copies by now (the index and the volumes
        are read at different moments)."""
        if f.kind in ("dangling", "misplaced") and f.blob is not None:
            now = self._catalog.blob(address(f.blob))
            return now is not None and not _recorded_copy_present(self._store, now)
        if f.path is not None and not f.path.exists():  # (an object in a store has no path)
            return False
        return f.kind != "orphan" or not consistency.blob_named(self._env, f.key, f.volume.volume_id)  # type: ignore[union-attr]

    def repair(self) -> Report:
        report = self.check()
        for finding in report.findings:
            try:
                finding.action = self._repair_one(finding)
            except Exception as exc:  # noqa: BLE001 - one finding's failure never stops the others
                finding.action = f"failed: {type(exc).__name__}: {exc}"
                log.exception("check --repair: %s %s", finding.kind, finding.subject)
        if any(f.kind == "refcount" and f.action == "repaired" for f in report.findings):
            self._destroy_doomed()
        return report

    # -- what is wrong --------------------------------------------------------------

    def _index_side(self, report: Report) -> Iterator[Finding]:
        counted = consistency.references(self._env)
        recorded: set[bytes] = set()
        for key, blob in consistency.blobs(self._env):
            report.blobs_examined += 1
            recorded.add(key)
            if blob.refcount != counted.get(key, 0):
                yield Finding("refcount", address(blob).hex, f"refcount {blob.refcount}, but "
                              f"{counted.get(key, 0)} instances name it", blob=blob, key=key,
                              number=counted.get(key, 0))
            volume = self._store.volume(blob.location.volume_id)
            if volume is None or volume.failed:
                continue  # a volume that is away: health's concern, and a rebuild's
            digest = address(blob)
            if volume.local.contains(digest):
                continue
            elsewhere = next((v for v in self._store.volumes if v is not volume and not v.failed
                              and v.local.contains(digest)), None)
            if elsewhere is not None:
                yield Finding("misplaced", digest.hex, f"recorded on {volume.path}, found on {elsewhere.path}",
                              volume=elsewhere, blob=blob, key=key)
            else:
                yield Finding("dangling", digest.hex, f"its blob is on no volume (recorded on {volume.path}; "
                              f"study {blob.study_instance_uid})", blob=blob, key=key)
        for instance in consistency.instances(self._env):
            if keys.blob_key(DigestFunction.BLAKE3, instance.digest) not in recorded:
                yield Finding("dangling", instance.sop_instance_uid, f"instance of study "
                              f"{instance.study_instance_uid} without a blob record")

    def _volume_side(self, report: Report) -> Iterator[Finding]:
        meant = consistency.moving(self._env) | consistency.doomed(self._env)
        for volume in self._store.volumes:
            if volume.failed:
                continue
            if isinstance(volume, ObjectStoreVolume):
                yield from self._objects_side(volume, meant, report)
                continue
            root = Path(volume.path)
            for path in _files(root / "tmp"):
                report.files_examined += 1
                yield Finding("temp-file", str(path), f"{_age(path, self._clock):.0f}s old", volume=volume, path=path)
            for path in _files(root / "blobs"):
                report.files_examined += 1
                key = _blob_key(path)
                if key is None or (volume.volume_id, key) in meant:
                    continue
                detail = self._orphan_detail(volume.volume_id, key, _age(path, self._clock))
                if detail is not None:
                    yield Finding("orphan", str(path), detail, volume=volume, path=path, key=key)

    def _objects_side(self, volume: ObjectStoreVolume, meant: set[tuple[str, bytes]],
                      report: Report) -> Iterator[Finding]:
        """An object-store tier's blob objects, judged like a volume's blob files (one listing)."""
        for object_key, written_at in volume.objects.stored_blobs():
            report.files_examined += 1
            key = _object_blob_key(object_key)
            if key is None or (volume.volume_id, key) in meant:
                continue
            detail = self._orphan_detail(volume.volume_id, key, max(0.0, self._clock() - written_at))
            if detail is not None:
                yield Finding("orphan", f"{volume.tier}:{object_key}", detail, volume=volume, key=key,
                              written_at=written_at)

    def _orphan_detail(self, volume_id: str, key: bytes, age_s: float) -> str | None:
        """Why a stored blob no entry on volume ``volume_id`` names is an orphan; None when it is not one."""
        blob = self._catalog.blob(_digest_of(key))
        if blob is None:
            return f"no record names it ({age_s:.0f}s old)"
        if blob.location.volume_id == volume_id:
            return None
        if _recorded_copy_present(self._store, blob):
            return f"a second copy (the record names volume {blob.location.volume_id})"
        return None  # the only copy, misplaced: reported (and repaired) from the index side

    def _replication_side(self) -> Iterator[Finding]:
        for key, entry in consistency.outbox_entries(self._env):
            if entry.delete or entry.hold_study_instance_uid:
                continue
            blob_key = keys.blob_key(entry.digest_function, entry.digest)
            if self._catalog.blob(_digest_of(blob_key)) is None and not _in_trash(self._env, entry.sop_instance_uid):
                yield Finding("stale-outbox", entry.sop_instance_uid, "an outbox entry for a blob the index no "
                              "longer has", key=key)
        if self._peer is None:
            return
        after = ""
        while True:
            records = replicas.list_records(self._env, self._peer.peer, after, 1000)
            for record in records:
                name = bytes.fromhex(record.digest.hash) if record.digest.hash else b""
                held = self._peer.shard_count(name)
                if held < self._peer.k:
                    yield Finding("replica-without-shards", record.sop_instance_uid,
                                  f"{self._peer.peer}'s instance of study {record.study_instance_uid}: {held} shards "
                                  f"here, {self._peer.k} needed", key=name, number=record.digest.size_bytes)
            if len(records) < 1000:
                return
            after = records[-1].sop_instance_uid

    # -- putting it right -------------------------------------------------------------

    def _repair_one(self, f: Finding) -> str:
        if f.kind in ("orphan", "temp-file"):
            return self._remove_leftover(f)
        if f.kind == "dangling":
            if f.blob is None:
                return "left: the instance has no blob record; `pacsvault restore --from-peer` brings it back"
            outcome = self._repair.repair(f.blob, "check: its blob is on no volume")
            return "repaired from " + outcome.how if outcome.done else f"left: {outcome.how}"
        if f.kind == "misplaced":
            assert f.volume is not None and f.blob is not None
            self._catalog.relocate(address(f.blob), BlobLocation(tier=f.volume.tier, volume_id=f.volume.volume_id),
                                   f.blob.stored_bytes)
            return "repaired"
        if f.kind == "refcount":
            assert f.blob is not None
            with self._locks.holding(f.blob.digest):
                done = consistency.set_refcount(self._env, f.key, f.blob.refcount, f.number)
            return "repaired" if done else "left: it changed meanwhile; check again"
        if f.kind == "replica-without-shards":
            assert self._peer is not None
            replicas.note_lost(self._env, self._peer.peer, {f.key: f.detail}, self._clock())
            return f"reported to {self._peer.peer}, which sends it again"
        if f.kind == "stale-outbox":
            outbox.drop(self._env, f.key)
            return "deleted"
        return "left"

    def _remove_leftover(self, f: Finding) -> str:
        assert f.volume is not None
        age = _age(f.path, self._clock) if f.path is not None else max(0.0, self._clock() - f.written_at)
        if age < self._grace:
            return f"left: {age:.0f}s old, younger than integrity.orphan_grace_s ({self._grace:.0f}s)"
        if f.kind == "temp-file":
            assert f.path is not None
            f.path.unlink(missing_ok=True)
            return "deleted"
        digest = _digest_of(f.key)
        with self._locks.holding(digest.hash):  # no store of these bytes can be between write and commit now
            if consistency.blob_named(self._env, f.key, f.volume.volume_id):
                return "left: a record names it now"
            f.volume.access.delete(digest)  # key slots zeroed first, like any deletion
        return "deleted"


def _in_trash(env: IndexEnvironment, sop_uid: str) -> bool:
    with env.read() as txn:
        return txn.get(sop_uid.encode(), db=env.dbs["trash"]) is not None


def _recorded_copy_present(store: TieredBlobStore, blob: BlobRecord) -> bool:
    volume = store.volume(blob.location.volume_id)
    return volume is not None and not volume.failed and volume.local.contains(address(blob))


def _files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            yield Path(directory) / name


def _blob_key(path: Path) -> bytes | None:
    """The blob key of ``<root>/blobs/<function>/ab/cd/<hex>``; None for anything else."""
    return _named_blob_key(path.parent.parent.parent.name, path.name)


def _object_blob_key(object_key: str) -> bytes | None:
    """The blob key of an object named ``<prefix><function>/ab/<hex>``; None for anything else."""
    parts = object_key.split("/")
    if len(parts) < 3 or parts[-2] != parts[-1][:2]:
        return None
    return _named_blob_key(parts[-3], parts[-1])


def _named_blob_key(function_name: str, hex_name: str) -> bytes | None:
    try:
        function = DigestFunction[function_name.upper()]
        raw = bytes.fromhex(hex_name)
    except (KeyError, ValueError):
        return None
    return keys.blob_key(function, raw) if len(raw) == 32 else None


def _digest_of(blob_key: bytes):  # type: ignore[no-untyped-def]
    from pacsvault.daemon.digest import Digest

    return Digest(DigestFunction(blob_key[0]), blob_key[1:], 0)


def _age(path: Path, clock: Callable[[], float]) -> float:
    try:
        return max(0.0, clock() - path.stat().st_mtime)
    except FileNotFoundError:
        return 0.0
