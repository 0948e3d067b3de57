"""The back office's and one serving process's parts in one process, over one index.

For work on a data dir while no daemon serves it (offline tools, benchmarks
that fill an index directly) and for tests that drive the use cases and the
mover a step at a time or with a clock of their own. The caller must hold the
data dir (no pacsvaultd running on it); the daemon itself runs as processes
(``supervisor``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pacsvault.daemon.config import Config
from pacsvault.daemon.processes import back_office, worker


class InProcess:
    """Both compositions, built as their processes would build them, sharing one LMDB environment."""

    def __init__(self, config: Config, run_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.office = back_office.build(config, run_dir, clock)
        back_office.recover(self.office)  # what a start does before anything serves
        self.worker = worker.build(config, run_dir, index=self.office.index, clock=clock)
        self.index = self.office.index
        self.catalog = self.worker.catalog
        self.tiering = self.office.tiering
        self.mover = self.office.tiering.mover

    def store(self, data: bytes) -> object:
        return self.worker.ingest.store(data)

    def close(self) -> None:
        self.worker.close()
        self.office.close()
