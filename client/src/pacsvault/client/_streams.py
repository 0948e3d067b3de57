"""Server streams with a deadline per message instead of one for the whole stream.

A 200 MB study over a slow link may take far longer than any sensible
deadline, yet a stream that stops moving must still end. So a stream has no
overall deadline; instead each wait for the next message may last at most
``idle_s`` seconds. Only the wait for the network counts: time the caller
spends between messages (writing files, a slow pipe) does not.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Generic, Protocol, TypeVar, cast

import grpc
import grpc.aio

from pacsvault.client._errors import DeadlineExceeded, error_from_rpc

T_co = TypeVar("T_co", covariant=True)


class CallStream(Protocol[T_co]):
    """What a blocking unary-stream stub call returns: an iterator that can be cancelled."""

    def __next__(self) -> T_co: ...
    def cancel(self) -> bool: ...


def _stalled(idle_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"no data from the appliance for {idle_s:g} s (the per-message deadline); "
                            "the stream was cancelled")


class _Watchdog:
    """One thread per stream that cancels the call when a wait for a message runs past its deadline."""

    def __init__(self, call: CallStream[object], idle_s: float) -> None:
        self._call, self._idle_s = call, idle_s
        self._deadline: float | None = None
        self._closed = False
        self.expired = False
        self._condition = threading.Condition()
        threading.Thread(target=self._run, name="pacsvault-stream-deadline", daemon=True).start()

    def arm(self) -> None:
        with self._condition:
            self._deadline = time.monotonic() + self._idle_s
            self._condition.notify()

    def disarm(self) -> None:
        with self._condition:
            self._deadline = None

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                if self._deadline is None:
                    self._condition.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    self.expired = True
                    self._call.cancel()
                    return
                self._condition.wait(remaining)


class MessageStream(Generic[T_co]):
    """The messages of a blocking server stream, errors mapped, each wait bounded by ``idle_s``.

    Iterate it; ``cancel()`` ends it early (from any thread).
    """

    def __init__(self, call: CallStream[T_co], idle_s: float | None) -> None:
        self._call, self._idle_s = call, idle_s
        self._watchdog = _Watchdog(call, idle_s) if idle_s else None

    def __iter__(self) -> MessageStream[T_co]:
        return self

    def __next__(self) -> T_co:
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.arm()
        try:
            return next(self._call)
        except StopIteration:
            self.cancel()
            raise
        except grpc.RpcError as exc:
            self.cancel()
            if watchdog is not None and watchdog.expired:
                raise _stalled(cast(float, self._idle_s)) from exc
            raise error_from_rpc(exc) from exc
        finally:
            if watchdog is not None:
                watchdog.disarm()

    def cancel(self) -> None:
        """Ends the call (a no-op once it finished) and its deadline thread."""
        if self._watchdog is not None:
            self._watchdog.close()
        self._call.cancel()

    def __del__(self) -> None:  # a consumer that walked away: free the thread and the appliance's stream
        self.cancel()


class AioCallStream(Protocol[T_co]):
    """What an asyncio unary-stream stub call returns."""

    async def read(self) -> object: ...
    def cancel(self) -> bool: ...


class AioMessageStream(Generic[T_co]):
    """As MessageStream, for a ``grpc.aio`` call: ``async for`` it."""

    def __init__(self, call: AioCallStream[T_co], idle_s: float | None) -> None:
        self._call, self._idle_s = call, idle_s

    def __aiter__(self) -> AioMessageStream[T_co]:
        return self

    async def __anext__(self) -> T_co:
        try:
            message = await asyncio.wait_for(self._call.read(), self._idle_s)
        except TimeoutError:
            self.cancel()
            raise _stalled(cast(float, self._idle_s)) from None
        except grpc.RpcError as exc:
            self.cancel()
            raise error_from_rpc(exc) from exc
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return cast(T_co, message)

    def cancel(self) -> None:
        self._call.cancel()
