"""The client's one exception tree, and the one place a gRPC status becomes part of it.

Every method of both clients raises only these (and ``OSError`` for local
files), never a bare ``grpc.RpcError``::

    PacsvaultError               also a grpc.RpcError, with .code() and .details()
    ├── InvalidInput             INVALID_ARGUMENT, OUT_OF_RANGE (the message names the field or the defect)
    ├── NotFound                 NOT_FOUND (unknown UID, or outside a share grant)
    ├── Conflict                 ALREADY_EXISTS, ABORTED (same SOP Instance UID, other bytes)
    ├── FailedPrecondition       FAILED_PRECONDITION (not possible in the appliance's state)
    ├── PermissionDenied         PERMISSION_DENIED (known caller, role missing)
    │   └── Unauthenticated      UNAUTHENTICATED (no, expired or revoked credentials)
    ├── Unavailable              UNAVAILABLE (unreachable, shutting down, a volume offline)
    │   └── DeadlineExceeded     DEADLINE_EXCEEDED, or no message within a stream's deadline
    ├── ResourceExhausted        RESOURCE_EXHAUSTED (disks or index full, over a size limit, busy)
    ├── DataLoss                 DATA_LOSS (stored data corrupt and not repairable)
    ├── IntegrityError           received bytes fail the digest sent with them (checked here)
    ├── Cancelled                CANCELLED
    └── ServerError              INTERNAL, UNKNOWN, UNIMPLEMENTED and anything else

Being a ``grpc.RpcError`` too keeps code written against the raw stubs
(``except grpc.RpcError as e: e.code()``) working unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import grpc
import grpc.aio


class PacsvaultError(grpc.RpcError):
    """Base of every error a pacsvault client raises on purpose."""

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self._details = details
        self._code = code or self.default_code

    def code(self) -> grpc.StatusCode:
        """The gRPC status the appliance answered (or the local equivalent)."""
        return self._code

    def details(self) -> str:
        """The appliance's words for people."""
        return self._details

    def __str__(self) -> str:
        return self._details


class InvalidInput(PacsvaultError):
    """The request or the uploaded file is not acceptable as it is."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PacsvaultError):
    """No such patient, study, series, instance, share, token or volume (or not visible to you)."""

    default_code = grpc.StatusCode.NOT_FOUND


class Conflict(PacsvaultError):
    """The SOP Instance UID is already stored with other bytes; the stored version is kept."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(PacsvaultError):
    """The appliance is not in a state where this can be done (e.g. replication off); retrying will not help."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(PacsvaultError):
    """The caller is known but its roles do not allow this call."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(PermissionDenied):
    """No credentials, or expired, revoked or wrong ones (a wrong share PIN too)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(PacsvaultError):
    """The appliance cannot be reached or cannot serve this now; retrying later may work."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(Unavailable):
    """No answer within the deadline (for a stream: no message within it)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(PacsvaultError):
    """Disks or index full, an upload over a configured limit, or too many callers at once."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(PacsvaultError):
    """The appliance's copy is corrupt and could not be repaired (from the peer either)."""

    default_code = grpc.StatusCode.DATA_LOSS


class IntegrityError(PacsvaultError):
    """Received bytes do not match the digest the appliance sent with them; nothing was handed over."""

    default_code = grpc.StatusCode.DATA_LOSS


class Cancelled(PacsvaultError):
    """The call was cancelled before it finished."""

    default_code = grpc.StatusCode.CANCELLED


class ServerError(PacsvaultError):
    """The appliance failed in a way it did not classify (INTERNAL, UNKNOWN, UNIMPLEMENTED)."""

    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[PacsvaultError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def error_from_rpc(exc: grpc.RpcError) -> PacsvaultError:
    """The member of the tree for a failed call (a PacsvaultError is returned as it is)."""
    if isinstance(exc, PacsvaultError):
        return exc
    if isinstance(exc, (grpc.Call, grpc.aio.AioRpcError)):
        code, details = exc.code(), exc.details() or ""
    else:  # an RpcError that is not a call: nothing more to read from it
        code, details = grpc.StatusCode.UNKNOWN, str(exc)
    return _BY_CODE.get(code, ServerError)(details or code.name, code)


def error_for_code(name: str, details: str) -> PacsvaultError:
    """The member of the tree for a status name such as ``"NOT_FOUND"`` (a StoreResult's ``code``)."""
    code = grpc.StatusCode[name] if name in grpc.StatusCode.__members__ else grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, ServerError)(details, code)


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Turns a ``grpc.RpcError`` raised inside into its PacsvaultError (cause kept)."""
    try:
        yield
    except PacsvaultError:
        raise
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
