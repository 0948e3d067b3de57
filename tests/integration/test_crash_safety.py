"""kill -9 in the middle of a large parallel store loses nothing acknowledged."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from pacsvault.v1 import archive_pb2, archive_pb2_grpc
from tests.conftest import Daemon

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    out = tmp_path_factory.mktemp("crash-corpus")
    return corpus_module.generate(out, patients=20, studies_per_patient=2, series_per_study=2,
                                  instances_per_series=5, seed=11)


def test_sigkill_during_parallel_store(daemon: Daemon, crash_corpus: list[corpus_module.GeneratedInstance]) -> None:
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def store(item: corpus_module.GeneratedInstance) -> None:
        if killed.is_set():
            return
        data = item.path.read_bytes()
        with PacsvaultClient(daemon.target, timeout=30) as client:
            result = client.store(data)
        if result.status == "stored":
            with lock:
                acknowledged[item.sop_instance_uid] = data

    def killer() -> None:
        while len(acknowledged) < len(crash_corpus) // 3:
            time.sleep(0.01)
        daemon.stop(signal.SIGKILL)
        killed.set()

    threading.Thread(target=killer, daemon=True).start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(store, crash_corpus))
    assert killed.is_set(), "the daemon finished before it could be killed: make the corpus larger"
    assert 0 < len(acknowledged) < len(crash_corpus)

    # A write the kill cut short leaves a temp file; plant one to be sure there is one.
    leftover = next(daemon.data_dir.glob("tiers/hot/tmp")) / "deadbeef.0.tmp"
    leftover.write_bytes(b"half a blob")
    daemon.start()
    assert not leftover.exists()
    with daemon.client() as client:
        # Every acknowledged instance survived, byte-identical.
        for uid, data in acknowledged.items():
            assert client.get_instance(uid) == data
        # Whatever else is indexed is complete: retrievable, in a consistent hierarchy.
        indexed = {m.instance.sop_instance_uid for m in client.find("instance")}
        assert set(acknowledged) <= indexed
        for uid in indexed - set(acknowledged):
            assert client.get_instance(uid) == next(i for i in crash_corpus if i.sop_instance_uid == uid).path.read_bytes()
        health = client.health().index
        assert health.instances == len(indexed)
        assert sum(m.study.number_of_study_related_instances for m in client.find("study")) == len(indexed)
    assert list(daemon.data_dir.glob("tiers/*/tmp/*")) == [], "temp files are cleaned at start-up"


def test_sigterm_lets_in_flight_stores_finish(daemon: Daemon, crash_corpus: list[corpus_module.GeneratedInstance]) -> None:
    item = crash_corpus[0]
    data = item.path.read_bytes()
    started = threading.Event()

    def slow() -> Iterator[archive_pb2.StoreInstanceRequest]:
        yield archive_pb2.StoreInstanceRequest(data=data[:1000])
        started.set()
        time.sleep(1.0)
        yield archive_pb2.StoreInstanceRequest(data=data[1000:])

    stub = archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(daemon.target))
    future = stub.StoreInstance.future(slow(), timeout=30)
    assert started.wait(10)
    time.sleep(0.3)  # the call has reached the daemon's handler
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # Meanwhile health says NOT_SERVING and new calls are refused as UNAVAILABLE.
    with daemon.client(timeout=5) as client:
        assert client.serving_status() == "NOT_SERVING"
        refused = client.store(data)
        assert (refused.status, refused.code) == ("rejected", "UNAVAILABLE")
    response = future.result()  # the in-flight store completes
    assert response.status == archive_pb2.STORE_STATUS_STORED
    assert daemon.proc.wait(30) == 0
    assert "shutting down" in daemon.log()
    daemon.start()
    with daemon.client() as client:
        assert client.get_instance(item.sop_instance_uid) == data
