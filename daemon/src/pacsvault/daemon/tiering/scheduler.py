"""Runs the mover's passes on their interval (back office); nothing else lives here."""

from __future__ import annotations

import logging
import threading

from pacsvault.daemon.tiering import transfers
from pacsvault.daemon.tiering.manager import TieringManager

log = logging.getLogger(__name__)


class TieringScheduler:
    """One thread: check volumes, run a mover pass (when the mover is enabled), wait, repeat.

    The volumes are checked even with the mover off: an object-store tier that
    was away is taken back only by a check.
    """

    def __init__(self, tiering: TieringManager) -> None:
        self._tiering = tiering
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tiering", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        transfers.yield_cpu()  # moves wait for serving, never the other way round
        interval = self._tiering.config.tiering.mover_interval_s
        while not self._stop.wait(interval):
            self._safely(self._tiering.check_volumes)
            if self._tiering.config.tiering.mover_enabled:
                self._safely(self._tiering.mover.run_once)

    @staticmethod
    def _safely(job: object) -> None:
        try:
            job()  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - a failed pass is logged and retried next interval
            log.exception("background pass %s failed", getattr(job, "__name__", job))
