"""C-ECHO and C-STORE SCP: every storage SOP class, in the transfer syntax it arrives in.

The Part 10 file handed to ``Ingest.store`` is the File Meta Information,
written here once, followed by the data set exactly as the sender encoded
it: nothing is decoded and re-encoded, so what is retrieved later, by any
door, is byte for byte what the modality sent. Success is answered only
after ``Ingest.store`` returned, that is once the blob and its index entry
are durable; anything refused gets the failure status its cause deserves
(``status.storage_failure``) and nothing is indexed.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode_file_meta

from pacsvault.daemon.dimse import status
from pacsvault.daemon.dimse.guard import ARCHIVE, ECHO, Guard
from pacsvault.daemon.errors import InvalidInput, PermissionDenied
from pacsvault.daemon.ingest import Ingest

log = logging.getLogger(__name__)
STORE = ARCHIVE + "StoreInstance"
_PREAMBLE = b"\x00" * 128 + b"DICM"


class StoreScp:
    def __init__(self, guard: Guard, ingest: Ingest) -> None:
        self._guard, self._ingest = guard, ingest

    def on_echo(self, event: Any) -> int:
        try:
            self._guard.authorize(event.assoc, ECHO)
        except PermissionDenied:
            return status.NOT_AUTHORIZED
        return status.SUCCESS

    def on_store(self, event: Any) -> Dataset | int:
        request = event.request
        sop_class, sop_instance = str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)
        try:
            with self._guard.call(event.assoc, STORE, {"sop_instance_uid": sop_instance}, changes=True) as call:
                data = part10(event, self._guard.connection(event.assoc).calling_ae)
                result = self._ingest.store(data, claimed=(sop_class, sop_instance),
                                            still_wanted=lambda: bool(event.assoc.is_established))
                instance = result.instance
                call.extra.update(sop_instance_uid=instance.sop_instance_uid,
                                  series_instance_uid=instance.series_instance_uid,
                                  study_instance_uid=instance.study_instance_uid, patient_id=instance.patient_id,
                                  issuer_of_patient_id=instance.issuer_of_patient_id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, here
            answer = status.storage_failure(exc)
            log.warning("C-STORE of %s refused with 0x%04X: %s", sop_instance, answer.Status, exc)
            return answer
        return status.SUCCESS


def part10(event: Any, calling_ae: str) -> bytes:
    """The received data set as a Part 10 file: our File Meta Information, then the data set as sent."""
    data_set = event.request.DataSet.getvalue()
    syntax = UID(event.context.transfer_syntax)
    order = "little" if syntax.is_little_endian else "big"
    if not syntax.is_deflated and int.from_bytes(data_set[:2], order) == 0x0002:
        # A data set on the network never carries group 0002; one that does would hold two.
        raise InvalidInput("the data set carries File Meta Information (group 0002), which a C-STORE must not; "
                           "nothing stored")
    meta = event.file_meta
    if calling_ae:
        meta.SourceApplicationEntityTitle = calling_ae  # provenance: which AE sent it
    return b"".join((_PREAMBLE, encode_file_meta(meta), data_set))
