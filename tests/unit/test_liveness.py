"""A process that has exited but is not reaped yet (a zombie) is not running: its temp files and
locks are left over, not held (the crash-safety test met this when PID 1 reaped slowly)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pacsvault.daemon import liveness


def test_a_zombie_is_not_running_and_a_live_process_is() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:  # exited, kept a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not liveness.running(child.pid)
    finally:
        child.wait()
    assert not liveness.running(child.pid)
    assert liveness.running(os.getpid())
    assert not liveness.running(0) and not liveness.running(-1)
