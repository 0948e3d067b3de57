"""Disaster recovery: rebuild this appliance from its peer (re-seeding a new peer is index.outbox.reseed).

An instance the peer cannot give back intact (more than m shards lost, a
copy that fails its digest, a link that drops) is skipped, named in the
progress with why, and the restore goes on: one bad blob never keeps the
rest of an archive from coming back. Running the restore again retries
exactly the instances still missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from pacsvault.daemon.digest import DigestFunction, parse_hex
from pacsvault.daemon.errors import PacsvaultError
from pacsvault.daemon.replication.peer_client import PeerClient

log = logging.getLogger(__name__)
PROGRESS_EVERY = 25


@dataclass(frozen=True)
class RestoreFailure:
    sop_instance_uid: str
    study_instance_uid: str
    reason: str


@dataclass
class RestoreProgress:
    total: int = 0
    done: int = 0
    already_present: int = 0
    bytes_restored: int = 0
    failed: int = 0
    # The failures since the previous progress report (each reported once).
    failures: list[RestoreFailure] = field(default_factory=list)


def restore_from_peer(peer: PeerClient, known: Callable[[str], bool],
                      store: Callable[[bytes, object], object]) -> Iterator[RestoreProgress]:
    """Fetches every instance the peer holds for us and stores what is missing.

    ``known(sop_uid)`` says whether an instance is already here, which makes a
    restore resumable: run it again and it continues where it stopped.
    ``store(data, digest)`` ingests through the normal, verifying path.
    """
    progress = RestoreProgress()
    token = ""
    while True:
        records, token = peer.list_records(token)
        progress.total += len(records)
        for record in records:
            _restore_one(peer, record, known, store, progress)
            if progress.failures or (progress.done + progress.already_present + progress.failed) % PROGRESS_EVERY == 0:
                yield progress
                progress.failures = []
        if not token:
            break
    yield progress


def _restore_one(peer: PeerClient, record: object, known: Callable[[str], bool],
                 store: Callable[[bytes, object], object], progress: RestoreProgress) -> None:
    sop_uid = record.sop_instance_uid  # type: ignore[attr-defined]
    if known(sop_uid):
        progress.already_present += 1
        return
    d = record.digest  # type: ignore[attr-defined]
    try:
        digest = parse_hex(DigestFunction(d.function), d.hash, d.size_bytes)
        data = peer.read_blob(digest)
        store(data, digest)
    except grpc.RpcError as exc:
        _failed(progress, record, f"the peer could not give it back: {exc.code().name}: {exc.details()}")
        return
    except (PacsvaultError, ValueError) as exc:
        _failed(progress, record, f"{type(exc).__name__}: {exc}")
        return
    progress.done += 1
    progress.bytes_restored += len(data)


def _failed(progress: RestoreProgress, record: object, reason: str) -> None:
    sop_uid, study_uid = record.sop_instance_uid, record.study_instance_uid  # type: ignore[attr-defined]
    progress.failed += 1
    progress.failures.append(RestoreFailure(sop_uid, study_uid, reason[:1000]))
    log.error("restore: instance %s of study %s could not be restored: %s", sop_uid, study_uid, reason)
