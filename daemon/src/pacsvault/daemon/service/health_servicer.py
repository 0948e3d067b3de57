"""Standard ``grpc.health.v1`` health checking, all three methods.

``List`` joined the standard health service in 2024; grpcio-health-checking's
servicer still answers it by raising NotImplementedError, which grpc logs as
an ERROR traceback for every caller that asks (Kubernetes probes, grpcurl,
load balancers). This servicer keeps its own copy of what ``set`` was told,
so ``List`` answers from it without reaching into the library's internals.
"""

from __future__ import annotations

import threading

import grpc
from grpc_health.v1 import health, health_pb2


class HealthServicer(health.HealthServicer):
    """grpc_health's servicer (Check, Watch, graceful shutdown) with ``List`` answered."""

    def __init__(self, experimental_non_blocking: bool = True) -> None:
        super().__init__(experimental_non_blocking=experimental_non_blocking)
        self._listed_lock = threading.Lock()
        # The base class starts with the server as a whole SERVING, before any set().
        self._listed: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._shut_down = False

    def set(self, service: str, status: int) -> None:  # noqa: A003 - the library's name
        super().set(service, status)
        with self._listed_lock:
            if not self._shut_down:
                self._listed[service] = status

    def enter_graceful_shutdown(self) -> None:
        super().enter_graceful_shutdown()  # every service NOT_SERVING (through set), later sets ignored
        with self._listed_lock:
            self._shut_down = True

    def List(self, request: health_pb2.HealthListRequest,  # noqa: N802 - the RPC's name
             context: grpc.ServicerContext) -> health_pb2.HealthListResponse:
        with self._listed_lock:
            listed = dict(self._listed)
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in listed.items()})
