"""The one mapping from the daemon's exceptions to gRPC status codes."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import grpc

from pacsvault.daemon import errors

log = logging.getLogger(__name__)

_RETRY_PUSHBACK = "grpc-retry-pushback-ms"

# Most specific first: subclasses before their bases.
_CODES: tuple[tuple[type[errors.PacsvaultError], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (errors.CapacityExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


def code_for(exc: errors.PacsvaultError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    if isinstance(exc, errors.Unavailable):
        # The daemon has already retried what was away (a tier, the peer) within the caller's
        # deadline; a client-side gRPC retry would only repeat it and turn the answer into
        # DEADLINE_EXCEEDED. Negative pushback tells gRPC not to retry (gRFC A6); the caller decides.
        context.set_trailing_metadata(((_RETRY_PUSHBACK, "-1"),))
    if isinstance(exc, errors.PacsvaultError):
        context.abort(code_for(exc), str(exc))
    # A bug: the caller gets an id to quote, the log gets the traceback.
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error {incident}; the daemon log has the details")


def _is_abort(exc: BaseException, context: grpc.ServicerContext) -> bool:
    """An exception that context.abort raised (here or deeper), to pass through untouched.

    grpcio's abort raises a bare Exception after setting the status, so the
    status already set is what tells it apart from a bug.
    """
    if type(exc).__name__ == "_AbortionError" or isinstance(exc, grpc.RpcError):
        return True
    code = getattr(context, "code", lambda: None)()
    return type(exc) is Exception and code is not None and code != grpc.StatusCode.OK


def mapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a servicer method (unary or streaming) with the error mapping."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status right here
                if _is_abort(exc, context):
                    raise
                abort(context, exc)
        return stream

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status right here
            if _is_abort(exc, context):
                raise
            abort(context, exc)
    return unary
