"""The back office's integrity parts, built in one place: what runs in the background, what
the internal listener answers, what health and /metrics say. ``back_office.build`` calls
``build`` once and hands the result on; nothing here is built anywhere else."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pacsvault.daemon.appliance_health import Concerns
from pacsvault.daemon.config import Config
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.integrity import concerns as concern_checks
from pacsvault.daemon.replication.manager import ReplicationManager
from pacsvault.daemon.storage.tiered import TieredBlobStore
from pacsvault.daemon.tiering.readmission import readmit_returned

log = logging.getLogger(__name__)


@dataclass
class IntegrityParts:
    concerns: list[Concerns] = field(default_factory=list)
    # (add_*Servicer_to_server, servicer) for the back office's internal listener.
    services: list[tuple[Callable[..., None], object]] = field(default_factory=list)
    # Background jobs: (name, run one step, seconds between steps).
    jobs: list[tuple[str, Callable[[], object], Callable[[], float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for name, step, interval in self.jobs:
            thread = threading.Thread(target=self._loop, args=(name, step, interval), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _loop(self, name: str, step: Callable[[], object], interval: Callable[[], float]) -> None:
        while not self._stop.wait(interval()):
            try:
                step()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("%s: step failed", name)


def build(config: Config, index: IndexEnvironment, store: TieredBlobStore, replication: ReplicationManager | None,
          clock: Callable[[], float] = time.time) -> IntegrityParts:
    parts = IntegrityParts()
    parts.concerns += [concern_checks.index(index), concern_checks.stored_data(index, clock)]
    parts.jobs.append(("readmit-volumes", lambda: readmit_returned(store),
                       lambda: config.health.capacity_interval_s))
    if replication is not None:
        parts.concerns += [concern_checks.replication(replication.status),
                           concern_checks.kept_for_peer(index, config.replication.peer_name)]
    return parts
