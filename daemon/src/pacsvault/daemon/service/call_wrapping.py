"""Run every call of a gRPC method inside a hook: the one handler-wrapping helper.

Interceptors that need to do something around each call (count it for the
drain at shutdown, time it for the metrics) give :func:`wrap_handler` a
context-manager factory instead of re-implementing the four handler kinds.
For streaming responses the hook spans the whole stream, including a client
cancelling it (the generator is closed and the hook's exit runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc

CallHook = Callable[[str, grpc.ServicerContext], contextlib.AbstractContextManager[None]]


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, hook: CallHook) -> grpc.RpcMethodHandler:
    """The same handler, with each call run inside ``hook(method, context)``."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, method, hook), handler.request_deserializer, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, method, hook), handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, method, hook), handler.request_deserializer,
            handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, method, hook), handler.request_deserializer, handler.response_serializer)


def _unary(
    behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str, hook: CallHook
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        with hook(method, context):
            return behaviour(request, context)
    return wrapped


def _streaming(
    behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str, hook: CallHook
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with hook(method, context):
            yield from behaviour(request, context)
    return wrapped
