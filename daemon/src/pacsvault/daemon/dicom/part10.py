"""Where a Part 10 file's data set starts: after the preamble, 'DICM' and the File Meta Information.

The meta group (0002) is always explicit VR little endian (PS3.10 7.1); it is
walked element by element rather than trusted by its group length, which
some writers get wrong.
"""

from __future__ import annotations

import struct

from pacsvault.daemon.errors import InvalidInput, NotDicom

_PREFIX = 132
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def data_set_offset(data: bytes) -> int:
    """The offset of the first element after the File Meta Information."""
    if len(data) < _PREFIX or data[128:132] != b"DICM":
        raise NotDicom("not a DICOM Part 10 file: no 'DICM' prefix after the 128-byte preamble")
    offset = _PREFIX
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            return offset
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, offset + 8)[0]
            offset += 12 + length
        else:
            length = struct.unpack_from("<H", data, offset + 6)[0]
            offset += 8 + length
    if offset > len(data):
        raise InvalidInput("truncated DICOM file: the File Meta Information runs past the end")
    return offset


def data_set(data: bytes) -> bytes:
    """The data set of a Part 10 file, exactly as encoded."""
    return data[data_set_offset(data) :]
