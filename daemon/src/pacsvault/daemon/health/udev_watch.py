"""Wake the disk poll when a block device comes or goes (pyudev monitor).

The monitor only *triggers* a poll; the poll's comparison with the previous
one (kept on disk) is what raises the added / removed / changed events, so
the events are the same whether or not a monitor is available. Without a
udev daemon (minimal systems, containers) the kernel's own uevents are used;
where netlink cannot be opened at all, changes are seen at the next
scheduled poll and the log says so once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import pyudev  # type: ignore[import-untyped]  # pyudev ships no type information

log = logging.getLogger(__name__)

# Whole-disk arrivals and departures, and md arrays changing state (a member
# failing, a rebuild starting or ending). Loop devices report "change" on
# every attach and are ignored.
_WAKE_ACTIONS = ("add", "remove")


def wants_poll(action: str, name: str) -> bool:
    """Whether a uevent should trigger an early disk poll."""
    return action in _WAKE_ACTIONS and not name.startswith(("loop", "ram", "zram")) or (
        action == "change" and name.startswith("md"))


class UdevWatcher:
    """Calls ``on_change(action, name)`` for block uevents that matter.

    Args:
        on_change: Called from the watcher's thread; must not block long.
        context: pyudev context (injectable).
    """

    def __init__(self, on_change: Callable[[str, str], None], context: pyudev.Context | None = None) -> None:
        self._on_change = on_change
        self._context = context
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = ""

    def start(self) -> bool:
        """Start watching; False (and a log line) when no monitor can be opened."""
        # udevd rebroadcasts events after processing them (with properties);
        # without udevd only the kernel's raw uevents exist.
        source = "udev" if os.path.isdir("/run/udev") else "kernel"
        try:
            monitor = pyudev.Monitor.from_netlink(self._context or pyudev.Context(), source=source)
            monitor.filter_by("block")
            monitor.start()
        except (OSError, ValueError) as exc:
            log.info("no udev monitor (%s): disk changes are seen at the next scheduled poll", exc)
            return False
        self.source = source
        self._thread = threading.Thread(target=self._run, args=(monitor,), name="health-udev", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop watching; the thread ends within a second (it is a daemon thread)."""
        self._stop.set()

    def _run(self, monitor: pyudev.Monitor) -> None:
        while not self._stop.is_set():
            try:
                device = monitor.poll(timeout=1.0)
            except OSError as exc:
                log.warning("udev monitor failed (%s); disk changes are seen at the next scheduled poll", exc)
                return
            if device is not None and wants_poll(device.action or "", device.sys_name):
                self._on_change(device.action or "", device.sys_name)
