"""Whether a process named by its pid still runs (a lock's holder, a temp file's writer).

``kill(pid, 0)`` alone says yes for a zombie: a process that has exited but
that nobody has reaped yet. Where PID 1 reaps slowly (a container's init, a
supervisor killed with SIGKILL whose children were re-parented), the workers
of a daemon that was killed stay zombies for a while, and their temp files
and locks looked held by a live writer.
"""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")".
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
