"""How an object store has been answering lately: calls, errors and latency over a sliding window.

Every call through ``s3_client.S3Calls`` is recorded here (its whole time,
retries included); health reads a summary. A call that ends in a store
failure (gave up, refused credentials, a 5xx after every retry) is an error;
a clear answer such as "no such object" is not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 300.0
# The window keeps at most this many calls (the newest): a busy mover must not grow it without bound.
MAX_CALLS = 20_000


@dataclass(frozen=True)
class CallSummary:
    """The calls of the last ``window_s`` seconds."""

    window_s: float
    calls: int
    errors: int
    p50_s: float
    p99_s: float
    last_error: str
    last_error_age_s: float | None

    @property
    def error_ratio(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


class CallStats:
    """A thread-safe window of (when, seconds, ok) per call."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._calls: deque[tuple[float, float, bool]] = deque(maxlen=MAX_CALLS)
        self._last_error: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def record(self, seconds: float, error: str = "") -> None:
        now = self._clock()
        with self._lock:
            self._calls.append((now, seconds, not error))
            if error:
                self._last_error = (now, error)

    def summary(self) -> CallSummary:
        now = self._clock()
        with self._lock:
            while self._calls and self._calls[0][0] < now - self.window_s:
                self._calls.popleft()
            recent = list(self._calls)
            last = self._last_error
        times = sorted(seconds for _, seconds, _ in recent)
        return CallSummary(
            self.window_s, len(recent), sum(1 for _, _, ok in recent if not ok),
            _quantile(times, 0.50), _quantile(times, 0.99),
            last[1] if last else "", now - last[0] if last else None)


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
