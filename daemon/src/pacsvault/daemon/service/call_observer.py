"""Every gRPC call, counted, timed and given its access-log line, from the outside of the call.

Counts follow go-grpc-prometheus (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``), so the
dashboards and alerts people already have for gRPC servers read them as they
are. A streaming call is timed from its start to its last message, so a
WatchHealth stream lands in the top bucket; that is its nature, not slowness.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pacsvault.daemon.instruments import Instruments
from pacsvault.daemon.service.access_log import AccessLog, close_note, open_note
from pacsvault.daemon.service.call_wrapping import wrap_handler


def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class CallObserver(grpc.ServerInterceptor):
    """Counts and times every call by service, method and status code, and writes its access line."""

    def __init__(self, meters: Instruments, access: AccessLog) -> None:
        self._meters, self._access = meters, access

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED itself
        service, _, method = details.method.lstrip("/").rpartition("/")
        labels = (grpc_type(handler), service, method)
        return wrap_handler(handler, details.method, lambda _, context: self._observed(labels, context))

    @contextlib.contextmanager
    def _observed(self, labels: tuple[str, str, str], context: grpc.ServicerContext) -> Iterator[None]:
        self._meters.grpc_started.labels(*labels).inc()
        note, token = open_note()
        started = time.perf_counter()
        outcome = "OK"
        try:
            yield
        except GeneratorExit:
            outcome = "CANCELLED"  # the client went away mid-stream
            raise
        except BaseException:
            outcome = "UNKNOWN"  # replaced below by the code the servicer set with abort
            raise
        finally:
            close_note(token)
            elapsed = time.perf_counter() - started
            code = context.code()
            if code is not None and code is not grpc.StatusCode.OK:
                outcome = code.name
            self._meters.grpc_handled.labels(*labels, outcome).inc()
            self._meters.grpc_handling_seconds.labels(*labels).observe(elapsed)
            self._access.record([("door", "grpc"), ("grpc_service", labels[1]), ("grpc_method", labels[2]),
                                 ("grpc_code", outcome), ("principal", note.principal),
                                 ("peer", context.peer()), ("duration_ms", elapsed * 1000)])
