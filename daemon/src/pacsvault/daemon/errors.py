"""The one exception tree of the daemon.

Domain modules raise these; only ``service.status`` turns them into gRPC
status codes, each class to exactly one code::

    PacsvaultError
    ├── InvalidInput            INVALID_ARGUMENT  (names the field or the defect)
    │   └── NotDicom            INVALID_ARGUMENT
    ├── NotFound                NOT_FOUND
    ├── Conflict                ALREADY_EXISTS    (same UID, different bytes)
    ├── CapacityExhausted       RESOURCE_EXHAUSTED
    │   ├── StorageFull         RESOURCE_EXHAUSTED (no tier has room)
    │   ├── IndexFull           RESOURCE_EXHAUSTED (LMDB map is full)
    │   └── TooLarge            RESOURCE_EXHAUSTED (over a configured limit)
    ├── FailedPrecondition      FAILED_PRECONDITION (not in the state this needs, e.g. encryption off)
    ├── OutOfRange              OUT_OF_RANGE      (e.g. an instance too large for one message: stream it)
    ├── Unavailable             UNAVAILABLE       (shutting down, volume gone)
    ├── DataLoss                DATA_LOSS         (corrupt at rest, unrepairable)
    ├── PermissionDenied        PERMISSION_DENIED (authenticated, but not allowed)
    │   └── Unauthenticated     UNAUTHENTICATED   (credential unknown, expired, revoked, used up)
    ├── BlobGone                (ingest retries it: never reaches a client)
    └── ConfigError             (start-up only: never reaches a client)
"""

from __future__ import annotations


class PacsvaultError(Exception):
    """Base of every error the daemon raises on purpose."""


class InvalidInput(PacsvaultError):
    """The request or the uploaded file is not acceptable as it is."""


class NotDicom(InvalidInput):
    """The uploaded bytes are not a DICOM Part 10 file."""


class NotFound(PacsvaultError):
    """No such patient, study, series, instance or blob."""


class Conflict(PacsvaultError):
    """The same SOP Instance UID is already stored with different bytes."""


class CapacityExhausted(PacsvaultError):
    """Some capacity ran out; nothing was acknowledged."""


class StorageFull(CapacityExhausted):
    """No tier has room for the blob."""


class IndexFull(CapacityExhausted):
    """The LMDB map is full."""


class TooLarge(CapacityExhausted):
    """The upload is larger than a configured limit."""


class FailedPrecondition(PacsvaultError):
    """The appliance is not in a state where this can be done; retrying will not help."""


class OutOfRange(PacsvaultError):
    """The request asks for more than this call can answer (an instance too large for one message)."""


class Unavailable(PacsvaultError):
    """The daemon or a part of it cannot serve this now; retry later."""


class DataLoss(PacsvaultError):
    """Stored data is corrupt or missing and cannot be repaired here."""


class PermissionDenied(PacsvaultError):
    """The caller is known but may not do this."""

    def __init__(self, message: str = "", *, who: str = "") -> None:
        super().__init__(message)
        # The caller as far as it is known (identity, certificate serial, token id): refusal records name it.
        self.who = who


class Unauthenticated(PermissionDenied):
    """The credential presented is unknown, expired, revoked or used up."""

    def __init__(self, message: str = "", *, who: str = "", locked_out: bool = False) -> None:
        super().__init__(message, who=who)
        # This very attempt locked the credential (too many wrong PINs): a security alert of its own.
        self.locked_out = locked_out


class BlobGone(PacsvaultError):
    """The blob record ingest meant to reuse was deleted or moved before its commit; write a copy."""


class ConfigError(PacsvaultError):
    """The configuration is invalid; the message names the key."""


def shown(value: str, limit: int = 64) -> str:
    """A caller's input for an error message: quoted, escaped, and cut short, so
    a hostile request is never echoed back whole."""
    text = repr(value[: limit + 1])
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(value)} characters)"
