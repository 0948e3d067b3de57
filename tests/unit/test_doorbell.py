"""The doorbell between serving processes and the back office (processes/doorbell.py), on real sockets."""

from __future__ import annotations

import threading
from pathlib import Path

from pacsvault.daemon.processes.doorbell import Doorbell, DoorbellListener


def test_a_full_queue_never_blocks_a_ring_from_either_side(tmp_path: Path) -> None:
    # While the peer is away the back office does not empty the bell, and stores keep ringing;
    # its own ring at shutdown must not then wait for room (it once held a stop for 40 s).
    listener = DoorbellListener(tmp_path / "bell")
    ringer = Doorbell(tmp_path / "bell")
    try:
        for _ in range(10_000):  # far beyond net.unix.max_dgram_qlen
            ringer.ring()
        done = threading.Event()
        threading.Thread(target=lambda: (listener.ring(), done.set()), daemon=True).start()
        assert done.wait(5), "the listener's own ring blocked on a full queue"
        assert listener.wait(0) is True
        assert listener.wait(0) is False, "one wait clears every queued ring"
    finally:
        ringer.close()
        listener.close()


def test_a_ring_nobody_listens_to_is_dropped(tmp_path: Path) -> None:
    ringer = Doorbell(tmp_path / "nobody")
    ringer.ring()
    ringer.close()
