"""gRPC's retry policy on the idempotent reads: a daemon restarted mid-sequence, a client that
connects before its daemon listens. Writes are never retried by the channel."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from pacsvault.client import AsyncPacsvaultClient, PacsvaultClient, RetryPolicy, Unavailable
from tests.conftest import Daemon, dicom_bytes, identity
from tests.ports import free_port

pytestmark = pytest.mark.slow


def on_port(daemon: Daemon, port: int) -> Daemon:
    """The same daemon (data dir) on a fixed port, so a client's address stays valid across restarts."""
    daemon.extra = [*daemon.extra, "--listen", f"127.0.0.1:{port}"]
    return daemon



def start_later(daemon: Daemon, delay_s: float) -> threading.Thread:
    started = threading.Thread(target=lambda: (time.sleep(delay_s), daemon.start()), daemon=True)
    started.start()
    return started


def test_reads_ride_out_a_daemon_restart_and_writes_are_not_retried(
        daemon_factory) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    daemon = on_port(daemon_factory(start=False), port).start()
    with PacsvaultClient(daemon.target) as client:
        assert client.store(dicom_bytes(**identity(1))).status == "stored"
        assert len(list(client.find("study"))) == 1
        daemon.stop()
        # While it is down a store is refused at once: the channel never resends a write.
        started = time.monotonic()
        refused = client.store(dicom_bytes(**identity(2)))
        assert (refused.status, refused.code) == ("rejected", "UNAVAILABLE") and time.monotonic() - started < 2
        restart = start_later(daemon, 1.0)
        started = time.monotonic()
        # Issued while nothing listens: UNAVAILABLE, retried with backoff until the daemon is back.
        assert [m.study.study_instance_uid for m in client.find("study")] == [identity(1)["StudyInstanceUID"]]
        waited = time.monotonic() - started
        restart.join()
        assert waited > 1.0, "the first attempts really met a closed port"
        assert client.get_instance(identity(1)["SOPInstanceUID"]) == dicom_bytes(**identity(1))
        # Without the policy the same read fails at once.
        daemon.stop()
    with PacsvaultClient(daemon.target, retry=None) as plain:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            list(plain.find("study"))
        assert time.monotonic() - started < 2


def test_a_client_may_connect_before_its_daemon_listens(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    daemon = on_port(daemon_factory(start=False), port)
    later = start_later(daemon, 1.5)
    with PacsvaultClient(f"127.0.0.1:{port}") as client:
        started = time.monotonic()
        assert client.serving_status() == "SERVING"
        assert time.monotonic() - started > 1.0
    later.join()

    daemon.stop()
    restart = start_later(daemon, 1.5)

    async def asynchronously() -> str:
        async with AsyncPacsvaultClient(f"127.0.0.1:{port}") as archive:
            return (await archive.health()).version

    started = time.monotonic()
    assert asyncio.run(asynchronously())
    assert time.monotonic() - started > 1.0
    restart.join()


def test_the_retry_window_is_bounded(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=0.4)
    with PacsvaultClient(f"127.0.0.1:{free_port()}", retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            client.health()
        assert 0.3 < time.monotonic() - started < 5  # 0.2 + 0.4 s of backoff, +-20 %
