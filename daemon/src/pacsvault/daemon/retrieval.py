"""Retrieval: which instances a request names, and their bytes, checked before any leaves.

Every instance read is verified against its address first. A missing,
unreadable or corrupt local copy is repaired from the peer when replication
is on (``repair.Repairer``); corruption at rest is also a security alert: a
sealed blob that fails authentication may have been tampered with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Protocol

from pacsvault.daemon.dicom import json_model, uid
from pacsvault.daemon.digest import Digest, DigestFunction, compute
from pacsvault.daemon.errors import DataLoss, NotFound, PacsvaultError, Unavailable
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord
from pacsvault.daemon.security.scope import ScopeGuard
from pacsvault.daemon.storage.blob_access import BlobReader, authenticated, read_all
from pacsvault.daemon.storage.tiered import Location, TieredBlobStore
from pacsvault.daemon.tiering.reads import ReadRecorder

log = logging.getLogger(__name__)
Member = tuple[InstanceRecord, BlobRecord]


class Repair(Protocol):
    """Gets a good copy of a blob back from elsewhere (the peer) and puts it in place here."""

    def repair(self, instance: InstanceRecord, blob: BlobRecord, address: Digest, problem: PacsvaultError) -> bytes:
        """The blob's original bytes, verified and rewritten locally; raises like the problem when it cannot."""
        ...


# Records that stored data of an instance failed authentication at rest (the audit trail's alert).
SecurityAlert = Callable[[str, InstanceRecord], None]


# Hears of every read that failed its check (missing, corrupt), and whether it was repaired.
ReadFailure = Callable[[InstanceRecord, BlobRecord, PacsvaultError, bool], None]


class Retrieval:
    def __init__(self, catalog: Catalog, store: TieredBlobStore, scope: ScopeGuard, reads: ReadRecorder,
                 repair: Repair | None = None, alert: SecurityAlert = lambda reason, instance: None,
                 failed_read: ReadFailure = lambda instance, blob, problem, repaired: None) -> None:
        self._catalog, self._store, self._scope, self._reads = catalog, store, scope, reads
        self._repair, self._alert, self._failed_read = repair, alert, failed_read

    # -- what a request names ---------------------------------------------------

    def instance(self, sop_uid: str) -> Member:
        instance, blob = self._catalog.instance(uid.check(sop_uid, "sop_instance_uid"))
        self._scope.check(instance.study_instance_uid, f"no instance with SOP Instance UID {sop_uid}")
        self._reads.note(instance.study_instance_uid, [blob])
        return instance, blob

    def series_instances(self, series_uid: str) -> list[Member]:
        members = self._catalog.series_instances(uid.check(series_uid, "series_instance_uid"))
        if members:
            self._scope.check(members[0][0].study_instance_uid, f"no series with Series Instance UID {series_uid}")
            self._reads.note(members[0][0].study_instance_uid, [b for _, b in members])
        return members

    def study_instances(self, study_uid: str) -> list[Member]:
        self._scope.check(uid.check(study_uid, "study_instance_uid"), f"no study with Study Instance UID {study_uid}")
        members = self._catalog.study_instances(study_uid)
        self._reads.note(study_uid, [b for _, b in members])
        return members

    # -- their bytes --------------------------------------------------------------

    def open_blob(self, blob: BlobRecord) -> BlobReader:
        """The blob's original bytes (opened, decrypted, decompressed frame by frame)."""
        return self._store.open(address(blob), Location(blob.location.tier, blob.location.volume_id))

    def read(self, instance: InstanceRecord, blob: BlobRecord) -> bytes:
        """The stored bytes, checked against their address before any leaves."""
        digest = address(blob)
        try:
            reader = self.open_blob(blob)
            try:
                data = read_all(reader)
            finally:
                reader.close()
            if authenticated(reader) or self._store.address(data).hash == digest.hash:
                return data
            problem: PacsvaultError = DataLoss("the stored bytes fail their digest")
        except (NotFound, DataLoss, Unavailable) as exc:
            problem = exc
        where = f"instance {instance.sop_instance_uid} of study {instance.study_instance_uid}"
        if isinstance(problem, DataLoss):
            log.error("SECURITY ALERT: %s: failed its integrity check at rest (%s)", where, problem)
            self._alert(f"{where}: failed its integrity check at rest ({problem})", instance)
        if self._repair is None:
            self._note(instance, blob, problem, repaired=False)
            raise type(problem)(f"{where}: {problem}") from problem
        try:
            data = self._repair.repair(instance, blob, digest, problem)
        except PacsvaultError:
            self._note(instance, blob, problem, repaired=False)
            raise
        self._note(instance, blob, problem, repaired=True)
        return data

    def _note(self, instance: InstanceRecord, blob: BlobRecord, problem: PacsvaultError, repaired: bool) -> None:
        """The integrity books hear of a copy missing or corrupt (not of a volume that is away)."""
        if isinstance(problem, (DataLoss, NotFound)):
            try:
                self._failed_read(instance, blob, problem, repaired)
            except PacsvaultError:
                log.exception("a failed read could not be recorded in the integrity books")

    def content_digest(self, blob: BlobRecord, data: bytes) -> Digest:
        """The plain BLAKE3 of bytes ``read`` returned, for the receiver to check: without
        sealing it is the blob's address, which ``read`` has just verified."""
        return address(blob) if self._store.sealer is None else compute(data)

    def study_metadata(self, study_uid: str) -> Iterator[tuple[str, str, str]]:
        """(SOP Instance UID, DICOM JSON, tier) for each instance, reading headers only."""
        return self.metadata(self.study_instances(study_uid))

    def metadata(self, members: list[Member], root: str = json_model.PACSVAULT_ROOT) -> Iterator[tuple[str, str, str]]:
        """(SOP Instance UID, DICOM JSON, tier) of each member, reading headers only;
        ``root``: where BulkDataURIs point."""
        for instance, blob in members:
            reader = self.open_blob(blob)
            try:
                yield instance.sop_instance_uid, json_model.instance_json(
                    reader, instance.study_instance_uid, instance.series_instance_uid,
                    instance.sop_instance_uid, root,
                ), blob.location.tier
            finally:
                reader.close()

    def bulk_value(self, instance: InstanceRecord, blob: BlobRecord, number: int) -> bytes | None:
        """The value of the instance's ``number``-th bulk data element (its BulkDataURI's last part)."""
        reader = self.open_blob(blob)
        try:
            return json_model.bulk_value(reader, instance.sop_instance_uid, number)
        finally:
            reader.close()


def address(blob: BlobRecord) -> Digest:
    return Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes)
