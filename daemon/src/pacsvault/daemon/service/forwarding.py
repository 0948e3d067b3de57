"""Methods a serving process answers by asking the back office.

What must run once per appliance (the mover, the replication sender, the
health monitor, key rotation) lives in the back office, so the operators'
methods about it are answered there. A serving process still authenticates,
authorises and audits the call like any other, then forwards the request
over the back office's internal listener (a unix socket only the daemon's
user can open) with the caller's remaining deadline, and passes the answer or
the status back unchanged. A cancelled stream cancels its forwarded call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

# Unary calls without a deadline of their own get this much (the back office answers in milliseconds).
DEFAULT_TIMEOUT_S = 60.0
_MESSAGE_BYTES = 16 * 1024 * 1024
_NO_DEADLINE_S = 10 * 365 * 86400


class BackOffice:
    """The serving process's channel to the back office."""

    def __init__(self, socket_path: Path) -> None:
        self.target = f"unix:{socket_path}"
        self.channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", _MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MESSAGE_BYTES),
        ])
        self._calls: dict[str, Any] = {}

    def call(self, method: MethodDescriptor) -> Any:
        callable_ = self._calls.get(method.full_name)
        if callable_ is None:
            response = message_factory.GetMessageClass(method.output_type)
            make = self.channel.unary_stream if method.server_streaming else self.channel.unary_unary
            callable_ = make(f"/{method.containing_service.full_name}/{method.name}",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=response.FromString)
            self._calls[method.full_name] = callable_
        return callable_

    def close(self) -> None:
        self.channel.close()


def forwarded(method: MethodDescriptor) -> Callable[..., Any]:
    """A servicer method that forwards to the back office (the servicer has a ``_back_office``)."""
    if method.client_streaming:
        raise ValueError(f"{method.full_name}: client-streaming methods are not forwarded")
    if method.server_streaming:
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._back_office.call(method)(request, timeout=remaining(context))
            context.add_callback(call.cancel)
            try:
                yield from call
            except grpc.RpcError as exc:
                _abort_like(context, exc)
            finally:
                call.cancel()
        stream.__name__ = method.name
        return stream

    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return self._back_office.call(method)(request, timeout=remaining(context) or DEFAULT_TIMEOUT_S)
        except grpc.RpcError as exc:
            _abort_like(context, exc)
    unary.__name__ = method.name
    return unary


def forwarding_servicer(base: type, service: ServiceDescriptor, back_office: BackOffice) -> Any:
    """A servicer of ``service`` (generated base class ``base``) whose every method is forwarded."""
    methods = {m.name: forwarded(m) for m in service.methods}
    servicer = type(f"Forwarding{service.name}", (base,), methods)()
    servicer._back_office = back_office
    return servicer


def remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's time left, None when it set no deadline (grpcio then answers about 2**63 seconds)."""
    left = context.time_remaining()
    return None if left is None or left > _NO_DEADLINE_S else left


def _abort_like(context: grpc.ServicerContext, exc: grpc.RpcError) -> None:
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and ("unix:" in details or "No such file" in details):
        details = "the appliance's back office is not answering (restarting?); retry shortly"
    context.abort(code, details)
