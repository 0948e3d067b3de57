"""Runs the background passes on their intervals; nothing else lives here."""

from __future__ import annotations

import logging
import threading
import time

from pacsvault.daemon.tiering.manager import TieringManager

log = logging.getLogger(__name__)


class TieringScheduler:
    """One thread: flush accesses, check volumes, run a mover pass, repeat."""

    def __init__(self, tiering: TieringManager) -> None:
        self._tiering = tiering
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tiering", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        config = self._tiering.config.tiering
        tick = min(config.access_flush_interval_s, config.mover_interval_s)
        next_move = time.monotonic()
        while not self._stop.wait(tick):
            self._safely(self._tiering.flush_accesses)
            if config.mover_enabled and time.monotonic() >= next_move:
                self._safely(self._tiering.check_volumes)
                self._safely(self._tiering.mover.run_once)
                next_move = time.monotonic() + config.mover_interval_s
        self._safely(self._tiering.flush_accesses)

    @staticmethod
    def _safely(job: object) -> None:
        try:
            job()  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - a failed pass is logged and retried next interval
            log.exception("background pass %s failed", getattr(job, "__name__", job))
