"""Ctrl-C during a stream: the stream is cancelled from a thread of our own, not interrupted.

Python raises KeyboardInterrupt wherever the main thread happens to be, and a
stream's main thread spends its time inside grpc's own code (waiting for the
next message, starting the next read); an exception there can leave the call
half set up, and the process then waits for it at exit. A CI run saw
`health --watch` still running 30 s after its Ctrl-C. Here the signal only
sets a flag; another thread cancels the call, and the stream ends the way a
cancelled call always does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> object: ...


@contextlib.contextmanager
def cancels(stream: Cancellable) -> Iterator[threading.Event]:
    """Within the block, Ctrl-C cancels ``stream``; the event yielded says whether it did."""
    interrupted, wake = threading.Event(), threading.Event()

    def canceller() -> None:
        wake.wait()
        if interrupted.is_set():
            stream.cancel()

    # Started before the signal can come: a handler that started a thread could deadlock on
    # threading's own locks if the signal arrived while the main thread held them.
    threading.Thread(target=canceller, name="ctrl-c", daemon=True).start()

    def on_ctrl_c(signum: int, frame: object) -> None:
        interrupted.set()
        wake.set()

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
        wake.set()
