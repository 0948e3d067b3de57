"""Security alerts: what counts as one, and how one is raised.

The audit trail is the one medium: an alert happens in whichever process
sees it (a serving process refusing a caller, the back office finding its
trail cut, the peer listener refusing a checkpoint), and is a record in the
trail. Whoever needs alerts reads them back from there: the ATNA export
(each becomes a DICOM Security Alert, 110113) and the back office's alert
follower (a WatchHealth event and ``pacsvault_security_alerts_total{kind}``).
Nothing about an alert lives in one process's memory.

Which records are alerts is decided here, once (:func:`alert_of`):

==========================  ==================================================================
kind                        record
==========================  ==================================================================
BlobAuthenticationFailed    phase ``alert``: stored data failed authentication at rest
StoredDataUnrepairable      phase ``alert``: a blob found missing or damaged (the scrub) that no
                            other copy, here or at the peer, could repair
AuditChainBroken            phase ``alert``: the trail's tail does not reach its checkpoints
                            (found at start), or ``audit verify`` found a bad record
WitnessConflict             phase ``alert``: the witness refused a checkpoint (another one
                            held for that number, a signature or key that does not match)
BreakGlassEnded             phase ``alert``: a break-glass grant ran out (the back office sees it)
AuthenticationRefused       phase ``refused``, UNAUTHENTICATED: unknown, expired or revoked
                            credential or certificate
PermissionRefused           phase ``refused``, PERMISSION_DENIED: authenticated, not allowed
                            (and a call's end with either code: refused by the use case)
PinLockout                  phase ``refused`` that locked a share after too many wrong PINs
BreakGlassStarted           the successful end of a ``BreakGlass`` call
CredentialRevoked           the successful end of ``RevokeToken``, ``RevokeCertificate``,
                            ``RevokeShare``
==========================  ==================================================================

TLS handshake failures are not among them: grpcio completes or drops a
handshake inside its C core and tells the Python code nothing, so a caller
without a certificate of the client CA is refused before any code of ours
could see it. A certificate that passes TLS but is revoked, or names nobody
allowed, is seen, and is an alert like any refusal.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Protocol

from pacsvault.daemon.errors import Unavailable

__all__ = ["AlertKind", "AlertSink", "Appender", "alert_of", "describe_alert", "is_refusal", "refusal_record"]

log = logging.getLogger(__name__)


class AlertKind(enum.StrEnum):
    BLOB_AUTHENTICATION_FAILED = "BlobAuthenticationFailed"
    STORED_DATA_UNREPAIRABLE = "StoredDataUnrepairable"
    AUDIT_CHAIN_BROKEN = "AuditChainBroken"
    WITNESS_CONFLICT = "WitnessConflict"
    BREAK_GLASS_STARTED = "BreakGlassStarted"
    BREAK_GLASS_ENDED = "BreakGlassEnded"
    AUTHENTICATION_REFUSED = "AuthenticationRefused"
    PERMISSION_REFUSED = "PermissionRefused"
    PIN_LOCKOUT = "PinLockout"
    CREDENTIAL_REVOKED = "CredentialRevoked"


# Calls whose successful end is itself an alert.
_ALERTING_CALLS = {
    "BreakGlass": AlertKind.BREAK_GLASS_STARTED,
    "RevokeToken": AlertKind.CREDENTIAL_REVOKED,
    "RevokeCertificate": AlertKind.CREDENTIAL_REVOKED,
    "RevokeShare": AlertKind.CREDENTIAL_REVOKED,
}
# A call refused by the use case itself (a self-approval, a credential revoked mid-stream, a
# break-glass by someone not listed) ends with one of these: a refusal all the same.
_REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
# The action recorded with alerts the archive raises on its own.
ALERT_ACTION = "SecurityAlert"


def alert_of(record: Mapping[str, object]) -> AlertKind | None:
    """The kind of security alert ``record`` is, or None when it is none."""
    phase = record.get("phase")
    if phase == "alert":
        try:
            return AlertKind(str(record.get("alert", "")))
        except ValueError:
            return None
    outcome = record.get("outcome")
    if phase == "refused" or (phase == "end" and outcome in _REFUSED):
        if record.get("locked_out"):
            return AlertKind.PIN_LOCKOUT
        if outcome == "UNAUTHENTICATED":
            return AlertKind.AUTHENTICATION_REFUSED
        return AlertKind.PERMISSION_REFUSED
    if phase == "end" and outcome == "OK":
        return _ALERTING_CALLS.get(str(record.get("action", "")))
    return None


def is_refusal(kind: AlertKind | None) -> bool:
    return kind in (AlertKind.AUTHENTICATION_REFUSED, AlertKind.PERMISSION_REFUSED, AlertKind.PIN_LOCKOUT)


def describe_alert(kind: AlertKind, record: Mapping[str, object]) -> str:
    """One sentence for people (WatchHealth, the log): identifiers only, never a reason typed by a user."""
    who = record.get("principal") or record.get("peer_appliance") or ""
    action = record.get("action", "")
    text = f"security alert {kind.value}"
    if kind in (AlertKind.AUTHENTICATION_REFUSED, AlertKind.PERMISSION_REFUSED, AlertKind.PIN_LOCKOUT):
        text += f": {action} refused for {who or 'an unidentified caller'} ({record.get('outcome', '')})"
    elif kind in (AlertKind.BREAK_GLASS_STARTED, AlertKind.BREAK_GLASS_ENDED, AlertKind.CREDENTIAL_REVOKED):
        text += f": {action} by {who}" if who else ""
    elif record.get("summary"):
        text += f": {record['summary']}"
    return f"{text} (audit record {record.get('seq', '?')})"


def refusal_record(method: str, who: str, outcome: str, peer: str, **detail: object) -> dict[str, object]:
    """The record of a call refused before it ran (no credential, a revoked one, not allowed)."""
    return {"action": method.rsplit("/", 1)[-1], "principal": who, "peer": peer, "outcome": outcome,
            "phase": "refused", **detail}


class Appender(Protocol):
    """What the sink needs of an ``AuditTrail``."""

    def append_async(self, event: dict[str, object], *, durable: bool = True) -> Future[int]:
        ...

    def append_later(self, event: dict[str, object]) -> None:
        ...


class AlertSink:
    """Raises alerts into a trail; with auditing off (no trail) only the log hears of them."""

    def __init__(self, trail: Appender | None) -> None:
        self._trail = trail

    def bind(self, trail: Appender) -> None:
        """Records into ``trail`` from now on (for a sink handed out before the trail was opened)."""
        self._trail = trail

    def alert(self, kind: AlertKind, summary: str, *, wait: bool = True, **fields: object) -> None:
        """Records an alert; ``summary`` names what happened with identifiers only (no patient data).

        ``wait``: return once it is on stable storage (else within the trail's flush window).
        An alert that cannot be recorded is logged, never raised: the event it reports
        has happened either way.
        """
        log.warning("security alert %s: %s", kind.value, summary)
        if self._trail is None:
            return
        event = {"action": ALERT_ACTION, "phase": "alert", "alert": kind.value, "outcome": "OK",
                 "summary": summary[:512], **fields}
        try:
            future = self._trail.append_async(event, durable=wait)
            if wait:
                future.result()
        except Unavailable:
            log.exception("security alert %s could not be recorded in the audit trail", kind.value)

    def refused(self, method: str, who: str, outcome: str, peer: str, **detail: object) -> None:
        """Records a refusal (an alert by kind, see ``alert_of``) without holding the caller up."""
        if self._trail is not None:
            self._trail.append_later(refusal_record(method, who, outcome, peer, **detail))
