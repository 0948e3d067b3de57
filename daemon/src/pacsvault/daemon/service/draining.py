"""Graceful shutdown: refuse new calls, let in-flight ones finish, then stop.

grpcio's own ``server.stop(grace)`` cancels a client-streaming call that is
still receiving (an upload in progress) at once, so the daemon drains its
calls itself before it stops the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

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
        return self._wrap(handler)

    def _enter(self, context: grpc.ServicerContext) -> None:
        with self._changed:
            if self._draining:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the appliance is shutting down; retry shortly")
            self._active += 1

    def _exit(self) -> None:
        with self._changed:
            self._active -= 1
            self._changed.notify_all()

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream), handler.request_deserializer, handler.response_serializer)

    def _unary(self, method: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def counted(request: Any, context: grpc.ServicerContext) -> Any:
            self._enter(context)
            try:
                return method(request, context)
            finally:
                self._exit()
        return counted

    def _streaming(
        self, method: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def counted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._enter(context)
            try:
                yield from method(request, context)
            finally:
                self._exit()
        return counted
