"""Storage Commitment Push Model SCP: N-ACTION in, N-EVENT-REPORT out (PS3.4 J).

The request is kept in the index before the N-ACTION is answered. Its
report goes on the same association while that is open (a thread of the
serving process waits for the verdict to be final: with
``commit_after_replication`` until the peer holds every instance); once the
requester has closed it, the back office's ``CommitmentReporter`` opens a
new association to the destination named like the requester's AE title,
as the Storage Commitment SCP in the SCP role (role selection negotiated).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacsvault.daemon.commitment import Commitments, Verdict
from pacsvault.daemon.config import Config
from pacsvault.daemon.dimse import status
from pacsvault.daemon.dimse.guard import ARCHIVE, Guard
from pacsvault.daemon.dimse.server import configure_pynetdicom
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index import commitments as repository
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import CommitmentRecord

log = logging.getLogger(__name__)
# The well-known SOP Instance of the Storage Commitment Push Model.
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
# Asking for a commitment is part of storing: whoever may store may ask.
COMMIT = ARCHIVE + "StoreInstance"
ACTION = "StorageCommitment"
# N-ACTION statuses (PS3.7 C): no such action type; invalid object instance; missing or invalid attribute.
_NO_SUCH_ACTION, _INVALID_INSTANCE, _MISSING_ATTRIBUTE, _INVALID_ATTRIBUTE = 0x0123, 0x0117, 0x0120, 0x0106
_POLL_S = 0.5
_LEASE_S = 30.0
# Many requesters release the association right after the N-ACTION's response: give them this long
# to do so before reporting on it (a report crossing their A-RELEASE-RQ is ignored), and wait at most
# _ANSWER_WAIT_S for the requester to acknowledge a report sent there; otherwise the back office
# reports on a new association.
_RELEASE_GRACE_S = 0.5
_ANSWER_WAIT_S = 10.0


class CommitmentScp:
    def __init__(self, guard: Guard, commitments: Commitments, index: IndexEnvironment, ae_title: str) -> None:
        self._guard, self._commitments, self._index, self._ae_title = guard, commitments, index, ae_title

    def on_action(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        if str(event.request.RequestedSOPClassUID) != StorageCommitmentPushModel:
            return status.answer(_NO_SUCH_ACTION, "only Storage Commitment Push Model actions"), None
        if event.action_type != 1:
            return status.answer(_NO_SUCH_ACTION, "Storage Commitment knows action type 1 only"), None
        if str(event.request.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
            return status.answer(_INVALID_INSTANCE, f"the instance is {WELL_KNOWN_INSTANCE}"), None
        info = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "")
        items = info.get("ReferencedSOPSequence")
        if not transaction_uid or not items:
            return status.answer(_MISSING_ATTRIBUTE, "TransactionUID and ReferencedSOPSequence are required"), None
        references = [(str(i.get("ReferencedSOPClassUID", "")), str(i.get("ReferencedSOPInstanceUID", "")))
                      for i in items]
        try:
            with self._guard.call(event.assoc, COMMIT, {"transaction_uid": transaction_uid,
                                                        "references": len(references)},
                                  changes=True, action=ACTION) as call:
                self._commitments.request(transaction_uid, self._guard.connection(event.assoc).calling_ae,
                                          call.principal.id, references)
        except InvalidInput as exc:
            return status.answer(_INVALID_ATTRIBUTE, str(exc)), None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, here
            answer = status.storage_failure(exc)
            log.warning("Storage Commitment %s refused with 0x%04X: %s", transaction_uid, answer.Status, exc)
            return answer, None
        # Reported from another thread: after this handler returns pynetdicom sends the N-ACTION's
        # response, and only then lets that thread's N-EVENT-REPORT out on the association.
        threading.Thread(target=self._report_here, args=(event.assoc, transaction_uid),
                         name="commitment-report", daemon=True).start()
        return status.SUCCESS, None

    def _report_here(self, assoc: Any, transaction_uid: str) -> None:
        """Reports on the requester's association while it is open; otherwise leaves it to the back office."""
        owner = f"worker-{os.getpid()}-{id(assoc)}"
        time.sleep(_RELEASE_GRACE_S)
        try:
            while True:
                record = repository.claim(self._index, transaction_uid, owner, time.time(), _LEASE_S)
                if record is None:
                    return
                verdict = self._commitments.judge(record)
                if verdict.final and assoc.is_established and _deliver_here(assoc, record, verdict, self._ae_title):
                    repository.finish(self._index, transaction_uid)
                    return
                if verdict.final or not assoc.is_established:
                    repository.release(self._index, transaction_uid, owner)
                    return
                time.sleep(_POLL_S)
        except Exception:  # noqa: BLE001 - the back office delivers it once the claim runs out
            log.exception("Storage Commitment %s: report on the same association failed", transaction_uid)


def _deliver_here(assoc: Any, record: CommitmentRecord, verdict: Verdict, ae_title: str) -> bool:
    """``deliver`` on the requester's own association, waiting for its answer at most _ANSWER_WAIT_S."""
    usual = assoc.dimse_timeout
    assoc.dimse_timeout = _ANSWER_WAIT_S
    try:
        return deliver(assoc, record, verdict, ae_title)
    finally:
        assoc.dimse_timeout = usual


def report_dataset(record: CommitmentRecord, verdict: Verdict, ae_title: str) -> tuple[Dataset, int]:
    """The N-EVENT-REPORT's Event Information and Event Type ID (1: all committed, 2: some failed)."""
    ds = Dataset()
    ds.TransactionUID = record.transaction_uid
    ds.RetrieveAETitle = ae_title
    if verdict.committed:
        ds.ReferencedSOPSequence = [_item(c, i) for c, i in verdict.committed]
    if verdict.failed:
        ds.FailedSOPSequence = [_item(c, i, reason) for c, i, reason in verdict.failed]
    return ds, 2 if verdict.failed else 1


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def deliver(assoc: Any, record: CommitmentRecord, verdict: Verdict, ae_title: str) -> bool:
    """Sends the report on ``assoc``; True when the requester acknowledged it."""
    info, event_type = report_dataset(record, verdict, ae_title)
    answer, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    ok = getattr(answer, "Status", None) == status.SUCCESS
    log.info("Storage Commitment %s: %d committed, %d failed, reported to %s: %s", record.transaction_uid,
             len(verdict.committed), len(verdict.failed), record.calling_ae,
             "acknowledged" if ok else f"status {getattr(answer, 'Status', 'none')}")
    return ok


class CommitmentReporter:
    """The back office's part: reports whose requester closed the association go on a new one."""

    OWNER = "back-office"

    def __init__(self, config: Config, index: IndexEnvironment, commitments: Commitments,
                 client_tls: Callable[[], ssl.SSLContext] | None, clock: Callable[[], float] = time.time) -> None:
        self._dicom, self._index, self._commitments = config.dicom, index, commitments
        self._destinations = {d.name: d for d in config.dicom.destinations}
        self._client_tls, self._clock = client_tls, clock
        configure_pynetdicom()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commitment-reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._dicom.idle_timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - retried next round
                log.exception("Storage Commitment reporter pass failed")

    def run_once(self) -> int:
        """One pass over the due requests; returns how many reports were delivered."""
        delivered = 0
        for due in repository.due(self._index, self._clock()):
            now = self._clock()
            record = repository.claim(self._index, due.transaction_uid, self.OWNER, now,
                                      self._dicom.idle_timeout_s * 2 + _LEASE_S)
            if record is None:
                continue
            verdict = self._commitments.judge(record)
            if not verdict.final:
                repository.release(self._index, record.transaction_uid, self.OWNER, now + _POLL_S * 4)
            elif self._send(record, verdict):
                repository.finish(self._index, record.transaction_uid)
                delivered += 1
            elif now - record.requested_at > self._dicom.commitment_timeout_s + 7 * 86400:
                log.error("Storage Commitment %s for %s: undeliverable for a week; given up",
                          record.transaction_uid, record.calling_ae)
                repository.finish(self._index, record.transaction_uid)
            else:
                backoff = min(300.0, 2.0 ** min(record.attempts, 8))
                repository.release(self._index, record.transaction_uid, self.OWNER, now + backoff, attempted=True)
        return delivered

    def _send(self, record: CommitmentRecord, verdict: Verdict) -> bool:
        destination = self._destinations.get(record.calling_ae)
        if destination is None:
            log.warning("Storage Commitment %s: %r closed its association and is not in dicom.destinations; "
                        "the report waits", record.transaction_uid, record.calling_ae)
            return False
        ae = AE(ae_title=self._dicom.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._dicom.idle_timeout_s
        tls_args = (self._client_tls(), destination.host) if destination.tls and self._client_tls else None
        assoc = ae.associate(destination.host, destination.port, [build_context(StorageCommitmentPushModel)],
                             ae_title=destination.name, tls_args=tls_args,
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True, scu_role=False)])
        if not assoc.is_established:
            log.warning("Storage Commitment %s: %s at %s:%d did not accept an association", record.transaction_uid,
                        destination.name, destination.host, destination.port)
            return False
        try:
            return deliver(assoc, record, verdict, self._dicom.ae_title)
        finally:
            assoc.release()
