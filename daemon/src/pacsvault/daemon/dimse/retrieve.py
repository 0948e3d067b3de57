"""C-GET and C-MOVE SCP: the instances an identifier names, sent exactly as stored.

pynetdicom's retrieve service classes send what a handler yields with
``Association.send_c_store``, which encodes a pydicom Dataset anew; an
encoding round trip is not byte-identical in general (group lengths are
dropped, undefined lengths may change). So each instance is yielded as a
``StoredInstance`` and the sending association's ``send_c_store`` is wrapped
(``send_as_stored``) to hand pynetdicom the stored Part 10 bytes as a file,
which with ``_config.STORE_SEND_CHUNKED_DATASET`` it sends without decoding:
the data set leaves exactly as it was received, in its own transfer syntax.
The file is an anonymous memory file (memfd): decrypted bytes never touch a
disk. Every instance is verified against its digest before it is sent
(``Retrieval.read``).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.sop_class import Verification

from pacsvault.daemon.config import DicomDestinationConfig
from pacsvault.daemon.dimse import status
from pacsvault.daemon.dimse.find import LEVELS, STUDY_ROOT
from pacsvault.daemon.dimse.guard import ARCHIVE, Guard
from pacsvault.daemon.errors import InvalidInput, NotFound
from pacsvault.daemon.index.records import BlobRecord, InstanceRecord
from pacsvault.daemon.index.query import Level
from pacsvault.daemon.retrieval import Retrieval
from pacsvault.daemon.search import Search

log = logging.getLogger(__name__)
Member = tuple[InstanceRecord, BlobRecord]
METHODS = {Level.PATIENT: ARCHIVE + "GetStudy", Level.STUDY: ARCHIVE + "GetStudy",
           Level.SERIES: ARCHIVE + "GetSeries", Level.INSTANCE: ARCHIVE + "GetInstance"}
# A requestor proposes at most 128 presentation contexts (odd context IDs 1-255).
_MAX_CONTEXTS = 128
_MAX_SUBOPERATIONS = 65535


class StoredInstance(Dataset):
    """An instance to send as stored: its Part 10 bytes (SOPInstanceUID for pynetdicom's failure lists)."""

    def __init__(self, part10: bytes, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPInstanceUID = sop_instance_uid
        self.part10 = part10


def send_as_stored(assoc: Any) -> None:
    """Makes ``assoc.send_c_store`` send a StoredInstance's bytes unchanged (see the module's docstring)."""
    if getattr(assoc, "_pacsvault_sends_as_stored", False):
        return
    plain: Callable[..., Any] = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(dataset, StoredInstance):
            return plain(dataset, *args, **kwargs)
        fd = os.memfd_create("pacsvault-instance", os.MFD_CLOEXEC)
        try:
            view = memoryview(dataset.part10)
            while view:
                view = view[os.write(fd, view):]
            return plain(Path(f"/proc/self/fd/{fd}"), *args, **kwargs)
        finally:
            os.close(fd)

    assoc.send_c_store = send_c_store
    assoc._pacsvault_sends_as_stored = True


class RetrieveScp:
    def __init__(self, guard: Guard, retrieval: Retrieval, search: Search,
                 destinations: dict[str, DicomDestinationConfig],
                 client_tls: Callable[[], ssl.SSLContext] | None) -> None:
        self._guard, self._retrieval, self._search = guard, retrieval, search
        self._destinations, self._client_tls = destinations, client_tls

    def on_get(self, event: Any) -> Iterator[Any]:
        send_as_stored(event.assoc)
        yield from self._retrieve(event, None)

    def on_move(self, event: Any) -> Iterator[Any]:
        yield from self._retrieve(event, str(event.move_destination or "").strip())

    def _retrieve(self, event: Any, destination_ae: str | None) -> Iterator[Any]:
        """The handler protocol: [destination,] number of sub-operations, then (status, dataset) each."""
        identifier = event.identifier
        try:
            level, uids = _what(identifier, str(event.request.AffectedSOPClassUID))
        except InvalidInput as exc:
            yield from self._refuse(destination_ae, status.answer(status.UNABLE_TO_PROCESS, str(exc)))
            return
        what = _audited(level, uids) | ({"destination": destination_ae} if destination_ae is not None else {})
        issuer = str(identifier.get("IssuerOfPatientID", "") or "").strip()
        sent, counted = 0, False
        try:
            with self._guard.call(event.assoc, METHODS[level], what, changes=False) as call:
                members = self._members(level, uids, issuer)
                if destination_ae is not None:
                    destination = self._destinations.get(destination_ae)
                    if destination is None:
                        call.extra["outcome"] = "NOT_FOUND"
                        log.warning("C-MOVE to %r refused: not one of dicom.destinations", destination_ae)
                        yield None, None  # pynetdicom answers "Move Destination unknown" (A801)
                        return
                    yield self._address(destination, members)
                yield len(members)
                counted = True
                call.released()  # the record is written before anything leaves
                for instance, blob in members:
                    if event.is_cancelled:
                        call.extra.update(messages=sent, outcome="CANCELLED")
                        yield status.CANCEL, None
                        return
                    data = self._retrieval.read(instance, blob)  # verified before any byte leaves
                    sent += 1
                    yield status.PENDING, StoredInstance(data, instance.sop_instance_uid)
                call.extra["messages"] = sent
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, here
            answer = status.query_failure(exc, retrieve=True)
            log.warning("%s refused with 0x%04X: %s", "C-MOVE" if destination_ae is not None else "C-GET",
                        answer.Status, exc)
            if counted:
                yield answer, None  # ends the request; pynetdicom counts what is left as failed
            else:
                yield from self._refuse(destination_ae, answer)

    def _refuse(self, destination_ae: str | None, answer: Dataset) -> Iterator[Any]:
        """A failure before any sub-operation. The handler protocol wants a destination and a count
        first, and pynetdicom associates with a C-MOVE's destination before it reads the failure, so
        that association is opened (with nothing to send) and released again."""
        if destination_ae is not None:
            destination = self._destinations.get(destination_ae)
            if destination is None:
                yield None, None  # "Move Destination unknown" (A801) says it all
                return
            yield self._address(destination, [])
        yield 1
        yield answer, None

    def _members(self, level: Level, uids: list[str], issuer: str) -> list[Member]:
        members: list[Member] = []
        for uid in uids:
            try:
                if level == Level.PATIENT:
                    for match in self._search.all_patient_studies(uid, issuer):
                        assert match.study is not None
                        members += self._retrieval.study_instances(match.study.study_instance_uid)
                elif level == Level.INSTANCE:
                    members.append(self._retrieval.instance(uid))
                elif level == Level.SERIES:
                    members += self._retrieval.series_instances(uid)
                else:
                    members += self._retrieval.study_instances(uid)
            except NotFound:
                continue  # no match for this one
            if len(members) > _MAX_SUBOPERATIONS:
                raise InvalidInput(f"more than {_MAX_SUBOPERATIONS} instances match; ask for less at once")
        return members

    def _address(self, destination: DicomDestinationConfig, members: list[Member]) -> tuple[str, int, dict[str, Any]]:
        """Where pynetdicom opens the sub-association, proposing each stored (SOP class, transfer syntax)."""
        pairs = sorted({(i.sop_class_uid, i.transfer_syntax_uid) for i, _ in members})
        if len(pairs) > _MAX_CONTEXTS:
            log.warning("C-MOVE: %d kinds of instance, more than one association can carry; the rest fail",
                        len(pairs))
        contexts = [build_context(sop, [syntax]) for sop, syntax in pairs[:_MAX_CONTEXTS]] \
            or [build_context(Verification)]  # an association needs one context, even with nothing to send
        options: dict[str, Any] = {"contexts": contexts,
                                   "evt_handlers": [(evt.EVT_ESTABLISHED, lambda e: send_as_stored(e.assoc))]}
        if destination.tls and self._client_tls is not None:
            options["tls_args"] = (self._client_tls(), destination.host)
        return destination.host, destination.port, options


def _what(identifier: Dataset, information_model: str) -> tuple[Level, list[str]]:
    name = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if name not in LEVELS:
        raise InvalidInput(f"QueryRetrieveLevel {name!r} must be PATIENT, STUDY, SERIES or IMAGE")
    level = LEVELS[name]
    if level == Level.PATIENT and information_model in STUDY_ROOT:
        raise InvalidInput("the Study Root model has no PATIENT level")
    keyword = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID", Level.SERIES: "SeriesInstanceUID",
               Level.INSTANCE: "SOPInstanceUID"}[level]
    element = identifier.get(keyword)
    values = [] if element is None or element == "" else \
        [str(v).strip() for v in (element if not isinstance(element, str) and hasattr(element, "__iter__")
                                  else [element])]
    values = [v for v in values if v]
    if not values or any("*" in v or "?" in v for v in values):
        raise InvalidInput(f"a retrieve at the {name} level names the {keyword}s it wants, without wildcards")
    return level, values


def _audited(level: Level, uids: list[str]) -> dict[str, object]:
    key = {Level.PATIENT: "patient_id", Level.STUDY: "study_instance_uid", Level.SERIES: "series_instance_uid",
           Level.INSTANCE: "sop_instance_uid"}[level]
    return {key: uids[0][:128]} if len(uids) == 1 else {key + "s": [u[:128] for u in uids[:100]]}
