"""What gets recorded for each call, and the fail-closed rule.

A call that reads or changes patient data (or security settings) gets a
record before it has any effect; if the trail cannot take it, the call is
refused with UNAVAILABLE and releases nothing. A call that changes something
waits until its record is on stable storage before its handler runs, except
a store: its record is written before its handler runs and made durable by
the index's group commit, which flushes the trail before it commits (so no
instance is ever indexed ahead of its record, and a batch of stores shares
one flush). A call
that only reads runs its handler meanwhile and waits before the first byte of
its answer leaves, by default until its record is written to the trail file
(it survives any crash of the daemon; the trail flushes it to stable storage
within 50 ms, the most a power cut could cost), or with
audit.flush_before_read until it is on stable storage, at the price of a
disk flush on every read's latency. A second record carries the outcome. Refused calls (no credentials, not allowed) are recorded too. The
identifiers recorded come from the request (UIDs, patient ID) and, for a
store, from the answer; a Find also keeps its query keys as asked (a name
pattern among them: ATNA's Query event carries the query); no name from
stored data and no pixel data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from pacsvault.daemon.audit.alerts import refusal_record
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.security.principals import Principal
from pacsvault.daemon.security.scope import current_principal

log = logging.getLogger(__name__)
# Health, reflection and metrics-like reads of the appliance itself carry no patient data.
QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.", "/pacsvault.v1.ApplianceService/",
                  "/pacsvault.v1.PeerService/")
# Changes whose begin record becomes durable with the index commit that makes the change
# (IndexEnvironment.durable_before_commit flushes the trail first), not before the handler runs.
DURABLE_AT_COMMIT = frozenset({"StoreInstance", "PutInstance"})
# Unary calls whose request is a whole file.
CARRIES_AN_UPLOAD = frozenset({"PutInstance"})
# Methods that change nothing: their handler may run while the begin record is flushed.
READ_ONLY = frozenset({
    "Find", "ListPatientStudies", "GetInstance", "ReadInstance", "GetSeries", "GetStudy", "GetStudyMetadata",
    "ListVolumes", "PlanMoves", "GetReplicationStatus", "ListTokens", "ListShares", "QueryAudit", "VerifyAudit",
    "GetEncryptionStatus", "ListStudyDeletionRequests", "GetScrubStatus", "CheckIntegrity", "ListLegalHolds",
    "ListDeleted",
})
# Fields of a request that hold a whole query (Find's filter).
QUERY_MESSAGES = frozenset({"filter"})
IDENTIFYING_FIELDS = ("sop_instance_uid", "series_instance_uid", "study_instance_uid", "patient_id",
                      "issuer_of_patient_id", "share_id", "token_id", "principal", "identity", "path", "volume",
                      "tier", "level", "reason", "request_id", "approval_request_id", "requested_by")


def describe(message: Any) -> dict[str, object]:
    """The identifying fields of a request or answer (nested filters included), bounded in size.

    A query's filter is also kept whole, as ``query``: every key it was asked
    with (a name pattern, an accession number, a date range, ...), because
    ATNA's Query event carries the query. The trail is sealed (encryption on)
    and the operational log never gets it.
    """
    found: dict[str, object] = {}
    if message is None or not hasattr(message, "ListFields"):
        return found
    for field, value in message.ListFields():
        if field.name in IDENTIFYING_FIELDS and isinstance(value, (str, int)):
            found[field.name] = value if isinstance(value, int) else value[:128]
        elif hasattr(value, "ListFields"):
            if field.name in QUERY_MESSAGES:
                found["query"] = _bounded(json_format.MessageToDict(value, preserving_proto_field_name=True))
            found.update(describe(value))
    return found


def _bounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in list(value.items())[:32]}
    return value[:128] if isinstance(value, str) else value


class AuditInterceptor(grpc.ServerInterceptor):
    def __init__(self, trail: AuditTrail, *, flush_before_read: bool = False) -> None:
        self._trail = trail
        self._flush_before_read = flush_before_read

    def record_refusal(self, method: str, principal: str, outcome: str, peer: str, **detail: object) -> None:
        """Authentication failures and denials, from the authorization interceptor (security alerts)."""
        self._trail.append_later(refusal_record(method, principal, outcome, peer, **detail))

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(QUIET_PREFIXES):
            return handler
        action = _name(details.method)
        if handler.unary_unary:
            # A whole upload identifies itself only in the answer (and reading its fields would copy it).
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, action, request_known=action not in CARRIES_AN_UPLOAD),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, action, request_known=False),
                handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, action), handler.request_deserializer,
                handler.response_serializer)
        return handler  # no bidirectional method carries patient data

    def _begin(self, action: str, context: grpc.ServicerContext, what: dict[str, object]) -> _Begun:
        base = _who(current_principal.get(), context) | {"action": action} | what
        read_only = action in READ_ONLY
        durable = self._flush_before_read if read_only else action not in DURABLE_AT_COMMIT
        begun = _Begun(base, self._trail.append_async(base | {"phase": "begin"}, durable=durable))
        if not read_only:
            # A change waits for its record before it happens (written, and with durable also flushed).
            self._recorded(begun, context)
        return begun

    @staticmethod
    def _recorded(begun: _Begun, context: grpc.ServicerContext) -> None:
        """Waits until the begin record is durable; fails the call closed when it cannot be."""
        if "begin" in begun.base:
            return
        try:
            begun.base["begin"] = begun.future.result()
        except Unavailable as exc:
            # Fail closed: nothing is read or changed without its record.
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def _end(self, base: dict[str, object], context: grpc.ServicerContext, outcome: str,
             extra: dict[str, object]) -> None:
        code = getattr(context, "code", lambda: None)()
        if code is not None and code != grpc.StatusCode.OK:
            outcome = code.name
        # The begin record guarded the call; the outcome is written here, in call order, but not
        # awaited to stable storage (handing it to the flusher cost a thread switch per call).
        written = self._trail.append_async(base | extra | {"phase": "end", "outcome": outcome}, durable=False)
        if written.exception() is not None:
            log.error("the outcome record of %s could not be written: %s", base.get("action"), written.exception())

    def _unary(self, behaviour: Callable[[Any, grpc.ServicerContext], Any], action: str,
               request_known: bool = True) -> Callable[[Any, grpc.ServicerContext], Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            begun = self._begin(action, context, describe(request) if request_known else {})
            outcome, answer = "OK", None
            try:
                answer = behaviour(request, context)
                self._recorded(begun, context)
                return answer
            except Exception as exc:
                outcome = _outcome(exc)
                self._recorded(begun, context)  # even an error answers UNAVAILABLE when unrecorded
                raise
            finally:
                self._end(begun.base, context, outcome, describe(answer))
        return wrapped

    def _streaming(self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
                   action: str) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            begun = self._begin(action, context, describe(request))
            outcome, count = "OK", 0
            try:
                for message in behaviour(request, context):
                    if not count:
                        self._recorded(begun, context)
                    count += 1
                    yield message
                self._recorded(begun, context)  # an empty answer is an answer too
            except Exception as exc:
                outcome = _outcome(exc)
                self._recorded(begun, context)  # even an error answers UNAVAILABLE when unrecorded
                raise
            finally:
                self._end(begun.base, context, outcome, {"messages": count})
        return wrapped


@dataclass
class _Begun:
    """A call's begin record: its fields, and the flush that makes it durable."""

    base: dict[str, object]
    future: Future[int]


def _outcome(exc: BaseException) -> str:
    return "ABORTED" if type(exc).__name__ == "_AbortionError" else type(exc).__name__


def _who(principal: Principal | None, context: grpc.ServicerContext) -> dict[str, object]:
    who: dict[str, object] = {"peer": context.peer()}
    if principal is not None:
        who["principal"] = principal.id
        who["roles"] = sorted(r.value for r in principal.roles)
        if principal.break_glass_reason:
            who["break_glass"] = principal.break_glass_reason
    return who


def _name(method: str) -> str:
    return method.rsplit("/", 1)[-1]
