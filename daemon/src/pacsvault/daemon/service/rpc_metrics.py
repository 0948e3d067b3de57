"""Request counts and latency per RPC method, for the Prometheus endpoint."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from pacsvault.daemon.service.call_wrapping import wrap_handler


class RpcMetricsInterceptor(grpc.ServerInterceptor):
    """Counts every call by method and status code, and times it.

    A streaming call is timed from its start to its last message, so a
    WatchHealth stream lands in the top bucket; that is its nature, not slowness.

    Args:
        requests: Counter labelled ``method``, ``code``.
        duration: Histogram labelled ``method``.
    """

    def __init__(self, requests: Counter, duration: Histogram) -> None:
        self._requests = requests
        self._duration = duration

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        return wrap_handler(handler, details.method, self._observed)

    @contextlib.contextmanager
    def _observed(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
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
            code = context.code()
            if code is not None and code is not grpc.StatusCode.OK:
                outcome = code.name
            self._requests.labels(method, outcome).inc()
            self._duration.labels(method).observe(time.perf_counter() - started)
