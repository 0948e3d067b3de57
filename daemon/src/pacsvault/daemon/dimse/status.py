"""The one mapping from the daemon's errors to DIMSE statuses (PS3.4 B.2.3, C.4; PS3.7 C).

Each failure carries an Error Comment (0000,0902) that says why, cut to the
64 characters its VR (LO) allows; the daemon log has the whole message.
"""

from __future__ import annotations

import logging
import uuid

from pydicom.dataset import Dataset

from pacsvault.daemon import errors

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
# PS3.7 C: statuses every DIMSE service may answer.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
NOT_AUTHORIZED = 0x0124
# C-STORE (PS3.4 B.2.3): out of resources; data set does not match the SOP class; cannot understand.
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# Query / retrieve (PS3.4 C.4): refused, out of resources (A700 find; A701 retrieve); move destination
# unknown; identifier does not match the SOP class; unable to process.
RETRIEVE_OUT_OF_RESOURCES = 0xA701
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PROCESS = 0xC000

COMMENT_CHARS = 64


def answer(status: int, comment: str = "") -> Dataset:
    """A status with its Error Comment, as pynetdicom's handlers return it."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment_text(comment)
    return ds


def comment_text(text: str) -> str:
    """``text`` as an Error Comment: ASCII, no backslash (a value separator), at most 64 characters."""
    plain = "".join(c if 0x20 <= ord(c) < 0x7F and c != "\\" else "?" for c in text)
    return plain if len(plain) <= COMMENT_CHARS else plain[: COMMENT_CHARS - 3] + "..."


def storage_failure(exc: BaseException) -> Dataset:
    """A refused C-STORE (or Storage Commitment reference): the status its cause deserves."""
    if isinstance(exc, errors.Conflict):
        return answer(DUPLICATE_SOP_INSTANCE, f"stored with other bytes; kept: {exc}")
    if isinstance(exc, errors.PermissionDenied):
        return answer(NOT_AUTHORIZED, str(exc))
    if isinstance(exc, (errors.CapacityExhausted, errors.Unavailable)):
        return answer(OUT_OF_RESOURCES, str(exc))
    if isinstance(exc, errors.InvalidInput):
        return answer(CANNOT_UNDERSTAND, str(exc))
    return answer(PROCESSING_FAILURE, _unexpected(exc))


def query_failure(exc: BaseException, retrieve: bool = False) -> Dataset:
    """A refused C-FIND, C-MOVE or C-GET."""
    if isinstance(exc, errors.PermissionDenied):
        return answer(NOT_AUTHORIZED, str(exc))
    if isinstance(exc, (errors.CapacityExhausted, errors.Unavailable)):
        return answer(RETRIEVE_OUT_OF_RESOURCES if retrieve else OUT_OF_RESOURCES, str(exc))
    if isinstance(exc, (errors.InvalidInput, errors.NotFound, errors.DataLoss)):
        return answer(UNABLE_TO_PROCESS, str(exc))
    return answer(UNABLE_TO_PROCESS, _unexpected(exc))


def _unexpected(exc: BaseException) -> str:
    if isinstance(exc, errors.PacsvaultError):
        return str(exc)
    # A bug: the caller gets an id to quote, the log gets the traceback.
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc)
    return f"internal error {incident}; see the daemon log"
