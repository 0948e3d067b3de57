"""The health event hub: bounded queues, drop-oldest, a publisher that never waits."""

from __future__ import annotations

import threading
import time

import pytest

from pacsvault.daemon.health.pubsub import Broker, TooManySubscribers


def test_full_queue_drops_the_oldest_and_counts() -> None:
    broker: Broker[int] = Broker(max_subscribers=2, queue_size=3)
    slow, fast = broker.subscribe(), broker.subscribe()
    started = time.monotonic()
    for i in range(1000):
        broker.publish(i)
        assert fast.get(timeout=0) == i
    assert time.monotonic() - started < 2.0  # nobody reading `slow` never held the publisher up
    assert [slow.get(timeout=0) for _ in range(3)] == [997, 998, 999]
    assert slow.get(timeout=0) is None
    assert slow.take_dropped() == 997 and slow.take_dropped() == 0
    assert fast.take_dropped() == 0
    assert broker.dropped_total == 997


def test_close_wakes_a_waiting_reader_and_frees_the_slot() -> None:
    broker: Broker[str] = Broker(max_subscribers=1, queue_size=4)
    sub = broker.subscribe()
    with pytest.raises(TooManySubscribers):
        broker.subscribe()
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.extend(sub))
    reader.start()
    broker.publish("a")
    time.sleep(0.1)
    sub.close("cancelled")
    reader.join(2.0)
    assert not reader.is_alive() and got == ["a"]
    assert broker.subscribers == 0
    broker.subscribe().close()  # the slot is free again


def test_broker_close_ends_every_subscription_and_refuses_new_ones() -> None:
    broker: Broker[int] = Broker(max_subscribers=4, queue_size=4)
    subs = [broker.subscribe() for _ in range(3)]
    broker.close("shutting down")
    assert all(s.closed == "shutting down" and s.get(timeout=0) is None for s in subs)
    late = broker.subscribe()
    assert late.closed == "shutting down" and list(late) == []
