"""Limits that keep any one caller from holding a serving process's threads.

grpcio runs every call on a thread of the process's pool (``server.max_workers``)
until its handler returns; an upload that sends nothing, or a caller that opens
more streams than there are threads, would otherwise stall every call of every
other caller, health checks included. So, per serving process:

* at most ``limits.max_streams_per_principal`` streams (uploads, retrievals,
  watches) per principal at once; more get RESOURCE_EXHAUSTED at once. The
  value is below ``server.max_workers`` (config checks it), so one principal
  always leaves threads for the others. Per process, not per appliance: each
  process has its own threads, and this protects each of them; across N
  serving processes one principal can hold N times the cap.
* an upload (a request stream) that sends nothing for
  ``limits.upload_idle_timeout_s`` is ended with DEADLINE_EXCEEDED while its
  handler waits for the next message, which frees the thread at once;
* no call runs longer than ``limits.max_call_s`` whatever deadline its caller
  set (a watch and a restore from the peer run as long as needed).

The ending is done by a watchdog thread, which cancels the call with its
status (the caller reads why). A handler waiting for an upload's next
message stops at once; one answering a stream stops at its next message; a
unary handler's answer is dropped, but its work runs to its end.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from pacsvault.daemon.config import LimitsConfig
from pacsvault.daemon.security.scope import current_principal

log = logging.getLogger(__name__)

# Health checks hold no thread for long (and a load balancer must always get an answer).
_UNCOUNTED = ("/grpc.health.v1.",)
# Long by design: a watch lasts as long as its watcher; a restore as long as the appliance is big.
_NO_CEILING = frozenset({"/pacsvault.v1.ApplianceService/WatchHealth",
                         "/pacsvault.v1.ReplicationService/RestoreFromPeer"})
_WATCH_EVERY_S = 0.2


@dataclass(eq=False)
class _Call:
    context: grpc.ServicerContext
    principal: str
    streaming: bool
    ends_at: float
    waiting_since: float | None = None  # an upload waiting for its next message, since when
    ended: bool = field(default=False)


class CallLimitsInterceptor(grpc.ServerInterceptor):
    """Runs after authorization (it needs the principal); see the module docstring."""

    def __init__(self, limits: LimitsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits, self._clock = limits, clock
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._streams: collections.Counter[str] = collections.Counter()
        self._watchdog: threading.Thread | None = None

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(_UNCOUNTED):
            return handler
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, False), handler.request_deserializer,
                handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, True), handler.request_deserializer,
                handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, False), handler.request_deserializer,
                handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method, True), handler.request_deserializer,
            handler.response_serializer)

    def _unary(self, behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str,
               uploads: bool) -> Callable[[Any, grpc.ServicerContext], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._admit(method, context, streaming=uploads)
            try:
                return behaviour(self._watched(request, call) if uploads else request, context)
            finally:
                self._leave(call)
        return wrapped

    def _streaming(self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str,
                   uploads: bool) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._admit(method, context, streaming=True)
            try:
                yield from behaviour(self._watched(request, call) if uploads else request, context)
            finally:
                self._leave(call)
        return wrapped

    def _admit(self, method: str, context: grpc.ServicerContext, *, streaming: bool) -> _Call:
        principal = current_principal.get()
        who = principal.id if principal is not None else "an unidentified caller"
        ends_at = math.inf if method in _NO_CEILING else self._clock() + self._limits.max_call_s
        call = _Call(context, who, streaming, ends_at)
        cap = self._limits.max_streams_per_principal
        with self._lock:
            if streaming and self._streams[who] >= cap:
                refused = True
            else:
                refused = False
                self._streams[who] += streaming
                self._calls.add(call)
                self._start_watchdog()
        if refused:
            log.warning("refused %s for %s: %d streams open in this serving process already",
                        method.rsplit("/", 1)[-1], who, cap)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{who} has {cap} streams open on this serving process already "
                          "(limits.max_streams_per_principal); finish or cancel one and retry")
        return call

    def _leave(self, call: _Call) -> None:
        with self._lock:
            self._calls.discard(call)
            self._streams[call.principal] -= call.streaming
            if self._streams[call.principal] <= 0:
                del self._streams[call.principal]

    def _watched(self, requests: Iterator[Any], call: _Call) -> Iterator[Any]:
        """The request stream, with the time its handler has been waiting for the next message."""
        while True:
            call.waiting_since = self._clock()
            try:
                message = next(requests)
            except StopIteration:
                return
            finally:
                call.waiting_since = None
            yield message

    # -- the watchdog ---------------------------------------------------------------

    def _start_watchdog(self) -> None:
        """Under the lock: one thread per process, started with its first call."""
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="call-limits", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        while True:
            time.sleep(_WATCH_EVERY_S)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive a bug in one pass
                log.exception("call limits: a watchdog pass failed")

    def check(self) -> None:
        """Ends every call past its ceiling, and every upload idle for too long."""
        now, idle = self._clock(), self._limits.upload_idle_timeout_s
        with self._lock:
            calls = [c for c in self._calls if not c.ended]
        for call in calls:
            waiting = call.waiting_since
            if now >= call.ends_at:
                self._end(call, f"the call ran longer than limits.max_call_s ({self._limits.max_call_s:g} s) "
                                "and was ended by the appliance")
            elif waiting is not None and now - waiting >= idle:
                self._end(call, f"upload idle for {idle:g} s (limits.upload_idle_timeout_s): nothing stored; "
                                "send the file again")

    def _end(self, call: _Call, details: str) -> None:
        call.ended = True
        log.warning("ending a call of %s: %s", call.principal, details)
        context = call.context
        context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)  # what the audit record of its end says
        context.set_details(details)
        _cancel_with_status(context, grpc.StatusCode.DEADLINE_EXCEEDED, details)


def _cancel_with_status(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """Cancels a call from another thread, with a status the caller reads.

    grpcio's public ``context.cancel()`` tells the caller only CANCELLED; the
    core call underneath takes a status and details (grpcio 1.5x-1.8x), which
    is what a person debugging a client needs. Falls back to the public call.
    """
    core_call = getattr(getattr(context, "_rpc_event", None), "call", None)
    if core_call is not None:
        try:
            core_call.cancel(code.value[0], details)
            return
        except (TypeError, ValueError):
            pass
    context.cancel()
