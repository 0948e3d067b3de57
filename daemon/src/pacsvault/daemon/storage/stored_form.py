"""Reading a blob's stored form (as the peer keeps it) back to its original bytes."""

from __future__ import annotations

from collections.abc import Callable

from pacsvault.daemon.digest import Digest
from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from pacsvault.daemon.storage.compressing import FramedReader
from pacsvault.daemon.storage.memory import BytesReader


def open_stored_form(stored: bytes, sealer: BlobSealer | None, address: Callable[[bytes], Digest],
                     expected: Digest | None, where: str) -> bytes:
    """The original bytes of ``stored``, checked against the address in its header (and ``expected``)."""
    reader = FramedReader(BytesReader(stored), where, sealer)
    header_address = reader.header.digest
    data = read_all(reader)
    if address(data) != header_address or (expected is not None and header_address != expected):
        raise DataLoss(f"{where}: the copy does not match its address")
    return data
