"""The udev watcher only wakes the disk poll; what matters is which uevents do."""

from __future__ import annotations

import os

import pytest

from pacsvault.daemon.health.udev_watch import UdevWatcher, wants_poll


@pytest.mark.parametrize(
    ("action", "name", "wanted"),
    [
        ("add", "sdc", True),  # a disk plugged in
        ("remove", "nvme1n1", True),  # a disk pulled
        ("add", "sdc1", True),  # its partitions arrive with it
        ("change", "md0", True),  # an array degraded or finished a rebuild
        ("change", "sda", False),  # media change noise
        ("change", "loop0", False),  # every losetup
        ("add", "loop8", False),
        ("add", "zram1", False),
    ],
)
def test_which_uevents_trigger_a_poll(action: str, name: str, wanted: bool) -> None:
    assert wants_poll(action, name) is wanted


def test_watcher_starts_here_or_says_why_not() -> None:
    calls: list[tuple[str, str]] = []
    watcher = UdevWatcher(lambda action, name: calls.append((action, name)))
    started = watcher.start()
    try:
        if os.geteuid() == 0:
            # Root can always read kernel uevents, with or without a udev daemon.
            assert started and watcher.source in ("udev", "kernel")
    finally:
        watcher.stop()
