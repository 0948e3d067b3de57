"""Each DICOM connection's socket: how much it may make this process hold, and prompt ACKs.

Prompt ACKs. Many DICOM senders leave Nagle's algorithm on (dcmtk 3.6.7's
storescu does): the last small segment of a request then waits for the ACK
of the previous one, which the receiving kernel delays by up to 40 ms, on
every request of an association that does one request at a time. The door
turns TCP_QUICKACK on before it reads each PDU and TCP_NODELAY on for its own
answers, so a sender's request is answered as soon as it is stored.

Memory.
pynetdicom reads each PDU whole, whatever length its header claims, and
gathers a DIMSE message's data set in memory until its last fragment. So a
connection gets two bounds: no PDU longer than the largest we announced
(``dicom.max_pdu_bytes``, plus room for an association request) is read at
all, and a data set that grows past ``limits.max_instance_bytes`` ends the
association (A-ABORT) as soon as it does, instead of being gathered whole
only to be refused. Both are logged with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import weakref
from typing import Any

log = logging.getLogger(__name__)
# An A-ASSOCIATE-RQ may carry more than a P-DATA PDU we announced (128 contexts, user identity).
_REQUEST_ROOM = 256 * 1024
_PDU_HEADER = 6
_DATA_SET_FRAGMENT = 0x00  # message control header bit 0: 0 data set, 1 command; bit 1: last fragment


class ConnectionPolicy:
    def __init__(self, max_pdu_bytes: int, max_instance_bytes: int) -> None:
        self._max_read = max_pdu_bytes + _REQUEST_ROOM
        self._max_data_set = max_instance_bytes
        self._received: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def on_conn_open(self, event: Any) -> None:
        """EVT_CONN_OPEN: bounds what the association's socket reads for one PDU; prompt ACKs."""
        sock = event.assoc.dul.socket
        plain = sock.recv
        limit = self._max_read
        raw = sock.socket
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def recv(nr_bytes: int) -> bytearray:
            if nr_bytes > limit:
                log.warning("DICOM connection from %s closed: a PDU of %d bytes, over dicom.max_pdu_bytes",
                            event.address[0] if getattr(event, "address", None) else "?", nr_bytes)
                raise OSError(f"PDU of {nr_bytes} bytes is over the largest this appliance reads ({limit})")
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # not sticky: set per read
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
