"""A small publish/subscribe hub whose publisher never waits.

The health monitor publishes from its polling threads; WatchHealth streams
consume at the speed of their network peers. Each subscriber has a bounded
queue. When it is full the *oldest* item is dropped and counted: the poller
is never blocked by a slow reader, and the reader, told how many it lost,
is sent a fresh snapshot so its picture is right again (see
``service.appliance_service``). Dropping the oldest rather than the newest
keeps the most recent state, which is what a health watcher needs.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pacsvault.daemon.errors import CapacityExhausted

T = TypeVar("T")


class TooManySubscribers(CapacityExhausted):
    """Every subscriber slot is taken."""


class Subscription(Generic[T]):
    """One subscriber's queue; iterate it, or call :meth:`get`.

    Args:
        maxsize: Items kept before the oldest are dropped.
        on_close: Called once when the subscription closes.
    """

    def __init__(self, maxsize: int, on_close: Callable[[Subscription[T]], None] | None = None) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._ready = threading.Condition()
        self._dropped = 0
        self._closed = ""
        self._on_close = on_close

    def offer(self, item: T) -> bool:
        """Queue ``item``; never blocks. Drops the oldest item when full.

        Returns:
            True when an older item was dropped to make room.
        """
        with self._ready:
            if self._closed:
                return False
            dropped = len(self._items) >= self._maxsize
            if dropped:
                self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """Next item, or ``None`` after ``timeout`` seconds or once closed."""
        with self._ready:
            if not self._items and not self._closed:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items and not self._closed else None

    def take_dropped(self) -> int:
        """Items dropped since the last call (and reset the count)."""
        with self._ready:
            dropped, self._dropped = self._dropped, 0
            return dropped

    def close(self, why: str = "closed") -> None:
        """End the subscription; a waiting :meth:`get` returns at once."""
        with self._ready:
            if self._closed:
                return
            self._closed = why
            self._items.clear()
            self._ready.notify_all()
        if self._on_close is not None:
            self._on_close(self)

    @property
    def closed(self) -> str:
        """Why it was closed, ``""`` while open."""
        return self._closed

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self.get()
            if item is None:
                if self._closed:
                    return
                continue
            yield item


class Broker(Generic[T]):
    """Fans published items out to every open :class:`Subscription`.

    Args:
        max_subscribers: More at once raise :class:`TooManySubscribers`.
        queue_size: Per-subscriber queue bound.
    """

    def __init__(self, max_subscribers: int, queue_size: int) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription[T]] = []
        self._max = max_subscribers
        self._queue_size = queue_size
        self._closed = ""
        self.dropped_total = 0

    def subscribe(self) -> Subscription[T]:
        """A new subscription; close it when done."""
        with self._lock:
            if self._closed:
                sub: Subscription[T] = Subscription(self._queue_size)
                sub.close(self._closed)
                return sub
            if len(self._subscribers) >= self._max:
                raise TooManySubscribers(
                    f"{self._max} health watchers already connected (health.max_watchers); try again later")
            sub = Subscription(self._queue_size, on_close=self._forget)
            self._subscribers.append(sub)
            return sub

    def publish(self, item: T) -> None:
        """Offer ``item`` to every subscriber; never blocks on a slow one."""
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.offer(item):
                self.dropped_total += 1

    def close(self, why: str) -> None:
        """Close every subscription (e.g. at shutdown) and refuse new ones."""
        with self._lock:
            self._closed = why
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.close(why)

    @property
    def subscribers(self) -> int:
        """Open subscriptions."""
        with self._lock:
            return len(self._subscribers)

    def _forget(self, sub: Subscription[T]) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
