"""Graceful shutdown: refuse new calls, let in-flight ones finish, then stop.

grpcio's own ``server.stop(grace)`` cancels a client-streaming call that is
still receiving (an upload in progress) at once, so the daemon drains its
calls itself before it stops the server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pacsvault.daemon.service.call_wrapping import wrap_handler

# Health and reflection keep answering while calls drain, so a load balancer
# sees NOT_SERVING rather than an error.
_ALWAYS_ALLOWED = ("/grpc.health.v1.", "/grpc.reflection.")


class DrainingInterceptor(grpc.ServerInterceptor):
    """Counts the calls in flight; once draining, new calls get UNAVAILABLE."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._active = 0
        self._draining = False

    def drain(self, timeout: float) -> int:
        """Stops accepting calls and waits for those in flight; returns how many are left."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._draining = True
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return self._active

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(_ALWAYS_ALLOWED):
            return handler
        return wrap_handler(handler, details.method, self._counted)

    @contextlib.contextmanager
    def _counted(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        self._enter(context)
        try:
            yield
        finally:
            self._exit()

    def _enter(self, context: grpc.ServicerContext) -> None:
        with self._changed:
            if self._draining:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the appliance is shutting down; retry shortly")
            self._active += 1

    def _exit(self) -> None:
        with self._changed:
            self._active -= 1
            self._changed.notify_all()
