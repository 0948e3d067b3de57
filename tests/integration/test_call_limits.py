"""One caller can never take a serving process's whole thread pool (issue 16, defect 5).

A per-principal cap on concurrent streams, a server-side idle timeout on
uploads and a ceiling on every call's duration, against a real daemon. The
daemon runs one serving process here, so that every connection lands on the
same thread pool: the cap holds per serving process (see README).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.v1 import archive_pb2, archive_pb2_grpc
from tests.conftest import Daemon, dicom_bytes, identity

INGESTER = "spiffe://pacsvault/client/modality"
VIEWER = "spiffe://pacsvault/client/viewer"


def limited(daemon_factory, tmp_path: Path, limits: str = "", server: str = "") -> tuple[Daemon, str, str]:  # type: ignore[no-untyped-def]
    """A daemon with one serving process and two principals; their tokens (on loopback a token alone is enough)."""
    (tmp_path / "pv.toml").write_text(
        f"[server]\n{server}\n[limits]\n{limits}\n[security]\n"
        f'principals = [{{ identity = "{INGESTER}", roles = ["ingest"] }}, '
        f'{{ identity = "{VIEWER}", roles = ["reader", "monitor"] }}]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml", extra=["--workers", "1"])
    with daemon.client() as admin:
        ingest = admin.create_token(INGESTER, ttl_seconds=600).token
        view = admin.create_token(VIEWER, ttl_seconds=600).token
    return daemon, ingest, view


class Upload:
    """A StoreInstance stream that sends ``first`` (possibly nothing) and then nothing until released."""

    def __init__(self, daemon: Daemon, token: str, first: list[bytes] | None = None, pace_s: float = 0.0,
                 timeout: float = 60.0) -> None:
        self.released = threading.Event()
        self.channel = grpc.insecure_channel(daemon.target)
        stub = archive_pb2_grpc.ArchiveServiceStub(self.channel)
        self.started = time.monotonic()
        self.future = stub.StoreInstance.future(self._requests(first or [], pace_s), timeout=timeout,
                                                metadata=[("authorization", f"Bearer {token}")])

    def _requests(self, first: list[bytes], pace_s: float) -> Iterator[archive_pb2.StoreInstanceRequest]:
        for chunk in first:
            yield archive_pb2.StoreInstanceRequest(data=chunk)
            if pace_s:
                time.sleep(pace_s)
        self.released.wait(120)

    def outcome(self, timeout: float = 30.0) -> tuple[grpc.StatusCode, str, float]:
        try:
            self.future.result(timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", time.monotonic() - self.started
        return grpc.StatusCode.OK, "", time.monotonic() - self.started

    def close(self) -> None:
        self.released.set()
        self.future.cancel()
        self.channel.close()


def test_33_idle_uploads_from_one_principal_leave_health_and_find_answering(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The issue's reproduction: 33 idle StoreInstance streams, one principal, 32 threads."""
    daemon, ingest, view = limited(daemon_factory, tmp_path)
    with daemon.client() as local:
        assert local.store(dicom_bytes(**identity(1))).ok
    uploads = [Upload(daemon, ingest) for _ in range(33)]
    try:
        time.sleep(1.0)
        with PacsvaultClient(daemon.target, token=view, timeout=5) as viewer:
            started = time.monotonic()
            assert viewer.health().index.instances == 1
            assert len(list(viewer.find("study"))) == 1
            assert viewer.serving_status() == "SERVING"
            assert time.monotonic() - started < 5
        refused = [u.outcome(timeout=5) for u in uploads if u.future.done()]
        assert len(refused) >= 33 - 16, f"{len(refused)} of 33 refused"
        assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.max_streams_per_principal" in details
                   for code, details, _ in refused), refused[:3]
    finally:
        for upload in uploads:
            upload.close()


def test_an_idle_upload_is_ended_and_its_thread_freed(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon, ingest, _ = limited(daemon_factory, tmp_path, "upload_idle_timeout_s = 1.5\nmax_streams_per_principal = 3",
                                "max_workers = 4")
    data = dicom_bytes(**identity(2))
    stalled = [Upload(daemon, ingest, [data[:1000]]) for _ in range(3)]  # a chunk, then silence
    try:
        for upload in stalled:
            code, details, took = upload.outcome()
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "idle" in details and "nothing stored" in details, \
                (code, details)
            assert took < 8, took
    finally:
        for upload in stalled:
            upload.close()
    with PacsvaultClient(daemon.target, token=ingest, timeout=10) as modality:  # the threads are free again
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda n: modality.store(dicom_bytes(**identity(n))), range(10, 13)))
        assert all(r.status == "stored" for r in results), results
    with daemon.client() as local:
        assert local.health().index.instances == 3


def test_no_call_outlives_the_ceiling(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon, ingest, _ = limited(daemon_factory, tmp_path, "max_call_s = 3.0\nupload_idle_timeout_s = 2.0")
    data = dicom_bytes(**identity(3))
    chunks = [data[i:i + 200] for i in range(0, len(data), 200)][:40]
    trickle = Upload(daemon, ingest, chunks, pace_s=0.25)  # never idle for long, but 10 s in all
    try:
        code, details, took = trickle.outcome()
    finally:
        trickle.close()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "limits.max_call_s" in details, (code, details)
    assert 2.5 < took < 7, took


@pytest.mark.parametrize(("limits", "named"), [
    ("max_streams_per_principal = 32", "limits.max_streams_per_principal"),
    ("max_streams_per_principal = 0", "limits.max_streams_per_principal"),
    ("upload_idle_timeout_s = 0", "limits.upload_idle_timeout_s"),
    ("max_call_s = -1", "limits.max_call_s"),
])
def test_limits_are_checked(tmp_path: Path, limits: str, named: str) -> None:
    from pacsvault.daemon import config
    from pacsvault.daemon.errors import ConfigError

    (tmp_path / "pv.toml").write_text(f"[limits]\n{limits}\n")
    with pytest.raises(ConfigError, match=named):
        config.load(tmp_path / "pv.toml")
