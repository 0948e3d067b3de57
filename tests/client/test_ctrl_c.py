"""Ctrl-C during a stream sets a flag and cancels the stream from another thread; no KeyboardInterrupt
is raised in the middle of whatever the main thread was doing."""

from __future__ import annotations

import os
import signal
import threading

from pacsvault.client.cli import ctrl_c


class Stream:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_ctrl_c_cancels_the_stream_and_raises_nothing() -> None:
    stream = Stream()
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c.cancels(stream) as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        assert stream.cancelled.wait(5), "cancelled from the other thread"
    assert interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is before, "Ctrl-C is Python's own again after the block"


def test_a_stream_that_ends_by_itself_is_not_cancelled() -> None:
    stream = Stream()
    with ctrl_c.cancels(stream) as interrupted:
        pass
    assert not interrupted.is_set() and not stream.cancelled.wait(0.2)
