"""What one association may make this process hold in memory.

pynetdicom reads each PDU whole, whatever length its header claims, and
gathers a DIMSE message's data set in memory until its last fragment. So a
connection gets two bounds: no PDU longer than the largest we announced
(``dicom.max_pdu_bytes``, plus room for an association request) is read at
all, and a data set that grows past ``limits.max_instance_bytes`` ends the
association (A-ABORT) as soon as it does, instead of being gathered whole
only to be refused. Both are logged with the reason.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

log = logging.getLogger(__name__)
# An A-ASSOCIATE-RQ may carry more than a P-DATA PDU we announced (128 contexts, user identity).
_REQUEST_ROOM = 256 * 1024
_PDU_HEADER = 6
_DATA_SET_FRAGMENT = 0x00  # message control header bit 0: 0 data set, 1 command; bit 1: last fragment


class Limits:
    def __init__(self, max_pdu_bytes: int, max_instance_bytes: int) -> None:
        self._max_read = max_pdu_bytes + _REQUEST_ROOM
        self._max_data_set = max_instance_bytes
        self._received: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def on_conn_open(self, event: Any) -> None:
        """EVT_CONN_OPEN: bounds what the association's socket reads for one PDU."""
        sock = event.assoc.dul.socket
        plain = sock.recv
        limit = self._max_read

        def recv(nr_bytes: int) -> bytearray:
            if nr_bytes > limit:
                log.warning("DICOM connection from %s closed: a PDU of %d bytes, over dicom.max_pdu_bytes",
                            event.address[0] if getattr(event, "address", None) else "?", nr_bytes)
                raise OSError(f"PDU of {nr_bytes} bytes is over the largest this appliance reads ({limit})")
            return plain(nr_bytes)  # type: ignore[no-any-return]

        sock.recv = recv

    def on_pdu_recv(self, event: Any) -> None:
        """EVT_PDU_RECV: counts the data set being received; aborts once it is over the limit."""
        items = getattr(event.pdu, "presentation_data_value_items", None)
        if not items:
            return
        assoc = event.assoc
        total = self._received.get(assoc, 0)
        for item in items:
            value = item.presentation_data_value
            header = value[0]
            if header & 0x01:
                continue  # a command fragment
            total += len(value) - 1
            if total > self._max_data_set:
                log.warning("DICOM association aborted: a data set of more than %d bytes arrived, over "
                            "limits.max_instance_bytes; nothing of it is stored", self._max_data_set)
                self._received.pop(assoc, None)
                assoc.abort()
                return
            if header & 0x02:
                total = 0  # its last fragment
        self._received[assoc] = total
