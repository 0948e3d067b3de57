"""Whether the peer answers, asked every few seconds with a short deadline.

The sender's own calls carry long deadlines (a shard upload may take a
while), so a peer that accepts connections but answers nothing -- a frozen
process, a hung disk under it -- would look "connected" for a minute or
more. This thread asks one cheap question (ListLostReplicas, whose answer
is also used: the replicas the peer cannot rebuild) every
``replication.probe_interval_s`` with a ``probe_timeout_s`` deadline:

* an answer of any kind (even an error status) means the peer is alive;
* DEADLINE_EXCEEDED means it took the call and said nothing: ``stalled``;
* UNAVAILABLE means it could not be reached at all: ``unreachable``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from pacsvault.v1 import peer_pb2

log = logging.getLogger(__name__)
_SILENT = {grpc.StatusCode.DEADLINE_EXCEEDED: "stalled", grpc.StatusCode.UNAVAILABLE: "unreachable"}


@dataclass(frozen=True)
class Liveness:
    # answering, stalled, unreachable, or unknown (not asked yet).
    state: str
    # Seconds since the peer last answered; None when it never did.
    last_answer_age_s: float | None
    detail: str


class PeerWatch:
    def __init__(self, ask: Callable[[float], list[peer_pb2.LostReplica]], interval_s: float, timeout_s: float,
                 on_answer: Callable[[list[peer_pb2.LostReplica]], None] = lambda lost: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``ask(timeout)``: the probe (PeerClient.list_lost_replicas); ``on_answer`` gets its answer."""
        self._ask, self._interval, self._timeout = ask, interval_s, timeout_s
        self._on_answer, self._clock = on_answer, clock
        self._state, self._detail = "unknown", ""
        self._answered_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._timeout + 5)

    def now(self) -> Liveness:
        with self._lock:
            age = None if self._answered_at is None else self._clock() - self._answered_at
            return Liveness(self._state, age, self._detail)

    def probe_once(self) -> Liveness:
        try:
            answer = self._ask(self._timeout)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code in _SILENT:
                self._set(_SILENT[code], f"{code.name}: {exc.details()}")  # type: ignore[attr-defined]
            else:
                self._set("answering", f"{code.name}: {exc.details()}", answered=True)  # type: ignore[attr-defined]
            return self.now()
        self._set("answering", "", answered=True)
        try:
            self._on_answer(answer)
        except Exception:  # noqa: BLE001 - the next probe tries again
            log.exception("peer watch: handling the peer's answer failed")
        return self.now()

    def _set(self, state: str, detail: str, answered: bool = False) -> None:
        with self._lock:
            if state != self._state:
                log.log(logging.INFO if state == "answering" else logging.WARNING, "peer %s%s", state,
                        f" ({detail})" if detail else "")
            self._state, self._detail = state, detail
            if answered:
                self._answered_at = self._clock()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self.probe_once()
            self._stop.wait(max(0.0, self._interval - (self._clock() - started)))
