"""Requests the daemon cannot parse are INVALID_ARGUMENT, not INTERNAL.

grpcio runs a method's request deserializer before any servicer or
interceptor code and answers INTERNAL when it raises, so corrupt wire bytes
from a buggy or hostile client looked like a daemon fault. This interceptor,
first in the chain, takes the raw bytes instead and parses them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class RequestDecodingInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        serialize = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_one(handler.unary_unary, parse), None, serialize)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_one(handler.unary_stream, parse), None, serialize)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_many(handler.stream_unary, parse), None, serialize)
        return grpc.stream_stream_rpc_method_handler(_many(handler.stream_stream, parse), None, serialize)


def _decoded(parse: Callable[[bytes], Any], raw: bytes, context: grpc.ServicerContext) -> Any:
    try:
        return parse(raw)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request message is malformed: {type(exc).__name__}")


def _one(behaviour: Callable[[Any, grpc.ServicerContext], Any], parse: Callable[[bytes], Any]) -> Callable[..., Any]:
    def wrapped(raw: bytes, context: grpc.ServicerContext) -> Any:
        return behaviour(_decoded(parse, raw, context), context)
    return wrapped


def _many(behaviour: Callable[[Any, grpc.ServicerContext], Any], parse: Callable[[bytes], Any]) -> Callable[..., Any]:
    def wrapped(raws: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        return behaviour((_decoded(parse, raw, context) for raw in raws), context)
    return wrapped
