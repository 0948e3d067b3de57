"""The access log: one structured line per call, at INFO, bounded in rate, without patient data.

Each line is ``key=value`` pairs (logfmt), e.g.::

    door=grpc grpc_service=pacsvault.v1.ArchiveService grpc_method=Find grpc_code=OK
    principal=spiffe://pacsvault/client/ris peer=ipv4:10.1.2.3:51234 duration_ms=2.4

or for DICOMweb ``door=dicomweb handler=/dicom-web/studies/{study} method=GET code=200``:
which method, who, from where, how it ended and how long it took. Never a
UID, a patient ID, a name or a query: the route template stands for the
path, and the audit trail (sealed) is where identifiers are kept.

A busy appliance makes thousands of calls a second; the log must not become
the bottleneck nor drown everything else. Each process writes at most
``server.access_log_per_s`` lines a second (bursts of ten times that); the
next line written says how many calls went unlogged meanwhile
(``unlogged=N``). The Prometheus counters count every call regardless.
``server.access_log_per_s = 0`` turns the access log off.

The caller's principal is known only once the authorization interceptor has
resolved it, deeper in the call; it writes it into this call's ``CallNote``
(``note_principal``), which the outer observer reads at the end.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("pacsvault.access")
BURST_SECONDS = 10.0
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/{}\[\]@+-]*$")


@dataclass
class CallNote:
    """What inner layers learn about a call that its access line reports."""

    principal: str = "-"


_current: contextvars.ContextVar[CallNote | None] = contextvars.ContextVar("access_call_note", default=None)


def note_principal(principal: str) -> None:
    """Who is calling, for the access line of the call under way (a no-op outside one)."""
    note = _current.get()
    if note is not None:
        note.principal = principal or "-"


def open_note() -> tuple[CallNote, contextvars.Token[CallNote | None]]:
    note = CallNote()
    return note, _current.set(note)


def close_note(token: contextvars.Token[CallNote | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:
        _current.set(None)  # a stream closed from another context, which never saw the set


class RateBound:
    """A token bucket: ``admit`` says yes at most ``per_s`` times a second on average, with bursts
    of ``BURST_SECONDS`` worth, and says how many it refused since the last yes."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self._clock = per_s, clock
        self._capacity = max(1.0, per_s * BURST_SECONDS)
        self._tokens, self._last = self._capacity, clock()
        self._refused = 0
        self._lock = threading.Lock()

    def admit(self) -> tuple[bool, int]:
        """(whether to go ahead, how many were refused since the last time it said yes)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.per_s)
            self._last = now
            if self._tokens < 1.0:
                self._refused += 1
                return False, 0
            self._tokens -= 1.0
            refused, self._refused = self._refused, 0
            return True, refused


class AccessLog:
    """Writes access lines, at most ``per_s`` a second on average (0: none)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._bound = RateBound(per_s, clock)

    @property
    def enabled(self) -> bool:
        return self._bound.per_s > 0 and log.isEnabledFor(logging.INFO)

    def record(self, fields: list[tuple[str, object]]) -> None:
        if not self.enabled:
            return
        admitted, unlogged = self._bound.admit()
        if not admitted:
            return
        line = " ".join(f"{key}={_value(value)}" for key, value in fields)
        log.info("%s%s", line, f" unlogged={unlogged}" if unlogged else "")


def _value(value: object) -> str:
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    if text and _PLAIN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
