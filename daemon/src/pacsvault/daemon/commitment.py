"""Storage Commitment: which of the instances a modality asks about this appliance holds safely.

A modality frees its own disk only once the archive commits to the
instances (DICOM Storage Commitment, PS3.4 J). An instance is committed when
it is indexed here, which ingest does only after its blob is durable; with
``dicom.commit_after_replication`` also only once the peer appliance holds
it (the blob's ``replicated`` flag). A reference to nothing stored, or to an
instance of another SOP class, fails at once; one still waiting for the peer
after ``dicom.commitment_timeout_s`` fails too, so the modality keeps its copy.

Requests are kept in the index (``index.commitments``) until their report
is delivered, so another process can deliver it after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import InvalidInput, NotFound
from pacsvault.daemon.index import commitments as repository
from pacsvault.daemon.index.catalog import Catalog
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import CommitmentRecord

# Failure Reason (0008,1197) values, PS3.4 J.3.2.1.1.
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110
MAX_REFERENCES = 10_000

Reference = tuple[str, str]  # (SOP Class UID, SOP Instance UID)


@dataclass(frozen=True)
class Verdict:
    committed: list[Reference]
    failed: list[tuple[str, str, int]]  # with its Failure Reason
    pending: int

    @property
    def final(self) -> bool:
        return not self.pending


class Commitments:
    def __init__(self, index: IndexEnvironment, catalog: Catalog, after_replication: bool, timeout_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._index, self._catalog = index, catalog
        self._after_replication, self._timeout_s, self._clock = after_replication, timeout_s, clock

    def request(self, transaction_uid: str, calling_ae: str, principal: str,
                references: list[Reference]) -> CommitmentRecord:
        """Keeps a request until its report is delivered; durable on return."""
        uid.check(transaction_uid, "TransactionUID (0008,1195)")
        if not references:
            raise InvalidInput("ReferencedSOPSequence (0008,1199) lists no instance")
        if len(references) > MAX_REFERENCES:
            raise InvalidInput(f"ReferencedSOPSequence lists {len(references)} instances; at most {MAX_REFERENCES}")
        record = CommitmentRecord(transaction_uid=transaction_uid, calling_ae=calling_ae, principal=principal,
                                  requested_at=self._clock())
        for sop_class, sop_instance in references:
            record.references.add(sop_class_uid=uid.check(sop_class, "ReferencedSOPClassUID (0008,1150)"),
                                  sop_instance_uid=uid.check(sop_instance, "ReferencedSOPInstanceUID (0008,1155)"))
        repository.put(self._index, record)
        return record

    def judge(self, record: CommitmentRecord) -> Verdict:
        committed: list[Reference] = []
        failed: list[tuple[str, str, int]] = []
        pending = 0
        expired = self._clock() - record.requested_at > self._timeout_s
        for ref in record.references:
            try:
                instance, blob = self._catalog.instance(ref.sop_instance_uid)
            except NotFound:
                failed.append((ref.sop_class_uid, ref.sop_instance_uid, NO_SUCH_OBJECT_INSTANCE))
                continue
            if instance.sop_class_uid != ref.sop_class_uid:
                failed.append((ref.sop_class_uid, ref.sop_instance_uid, CLASS_INSTANCE_CONFLICT))
            elif not self._after_replication or blob.replicated:
                committed.append((ref.sop_class_uid, ref.sop_instance_uid))
            elif expired:
                failed.append((ref.sop_class_uid, ref.sop_instance_uid, PROCESSING_FAILURE))
            else:
                pending += 1
        return Verdict(committed, failed, pending)
