"""The caller's gRPC deadline reaches the object store: its calls give up in time to answer.

A read of a blob that lives only on an object-store tier waits for that
store; when the store is slow or away, the caller must get UNAVAILABLE naming
the tier before its own deadline passes, not DEADLINE_EXCEEDED with nothing
said. Every call runs inside ``s3_client.deadline`` with the time the caller
has left, less a margin for the answer to travel back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pacsvault.daemon.service import forwarding
from pacsvault.daemon.service.call_wrapping import wrap_handler
from pacsvault.daemon.storage.s3_client import deadline

# The answer leaves this much before the caller's deadline: a tenth of the time, 50 ms to 1 s.
_MARGIN_SHARE, _MARGIN_MIN_S, _MARGIN_MAX_S = 0.1, 0.05, 1.0


def time_for_the_store(remaining_s: float) -> float:
    """Of ``remaining_s`` the caller allows, how long the store may take."""
    margin = min(_MARGIN_MAX_S, max(_MARGIN_MIN_S, _MARGIN_SHARE * remaining_s))
    return max(0.0, remaining_s - margin)


class CallerDeadlineInterceptor(grpc.ServerInterceptor):
    """Bounds the object-store calls of each RPC by the caller's deadline (none set: the store's own timeouts)."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        return wrap_handler(handler, details.method, _bounded)


@contextlib.contextmanager
def _bounded(method: str, context: grpc.ServicerContext) -> Iterator[None]:
    remaining = forwarding.remaining(context)
    if remaining is None:
        yield
        return
    with deadline(time_for_the_store(remaining)):
        yield
