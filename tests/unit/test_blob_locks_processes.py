"""Blob locks across serving processes with several threads each: a wait the kernel takes for a
deadlock (POSIX locks belong to the process) is waited out, not an INTERNAL store failure."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from pacsvault.daemon.processes.locks import BlobLocks

STRIPE_A, STRIPE_B = bytes([1]), bytes([2])


def _other_process(path: str, holds_b: multiprocessing.Event, waits_a: multiprocessing.Event,
                   release_b: multiprocessing.Event) -> None:
    """Holds stripe B in one thread and, in another, waits for stripe A."""
    locks = BlobLocks(Path(path))

    def hold_b() -> None:
        with locks.holding(STRIPE_B):
            holds_b.set()
            release_b.wait(30)

    def want_a() -> None:
        waits_a.set()
        with locks.holding(STRIPE_A):
            pass

    threads = [threading.Thread(target=hold_b), threading.Thread(target=want_a)]
    threads[0].start()
    holds_b.wait(30)
    threads[1].start()
    for thread in threads:
        thread.join(60)


def test_crossed_waits_of_two_processes_end_without_an_error(tmp_path: Path) -> None:
    path = tmp_path / "blob-locks"
    locks = BlobLocks(path)
    ctx = multiprocessing.get_context("fork")
    holds_b, waits_a, release_b = ctx.Event(), ctx.Event(), ctx.Event()
    errors: list[BaseException] = []
    with locks.holding(STRIPE_A):  # this process holds A ...
        other = ctx.Process(target=_other_process, args=(str(path), holds_b, waits_a, release_b))
        other.start()
        assert holds_b.wait(30) and waits_a.wait(30)  # ... the other holds B and waits for A

        def want_b() -> None:  # ... and another thread here asks for B: the kernel sees a cycle
            try:
                with locks.holding(STRIPE_B):
                    pass
            except BaseException as exc:  # noqa: BLE001 - judged below
                errors.append(exc)

        waiter = threading.Thread(target=want_b)
        waiter.start()
        waiter.join(0.5)
    release_b.set()  # A is free now; the other process lets B go once it had A
    waiter.join(30)
    other.join(30)
    assert not errors, errors
    assert not waiter.is_alive() and other.exitcode == 0
