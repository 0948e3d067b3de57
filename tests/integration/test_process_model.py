"""pacsvaultd as processes: a supervisor, serving workers on one port, one back office.

What must hold whatever process a call lands on, and whichever process dies:
nothing acknowledged is lost, a change made through one worker holds at the
next call to another, one audit chain, one daemon per data dir and volume,
and nothing serving once the supervisor is gone.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from pacsvault.v1 import archive_pb2, archive_pb2_grpc
from tests.conftest import Daemon, dicom_bytes, identity, run_cli

pytestmark = pytest.mark.slow
WORKER_MODULE = "pacsvault.daemon.processes.worker"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("process-corpus"), patients=12, studies_per_patient=2,
                                  series_per_study=2, instances_per_series=4, seed=23)


def workers(daemon: Daemon) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's children."""
    assert daemon.proc is not None
    found = {}
    for child in psutil.Process(daemon.proc.pid).children():
        try:
            cmdline = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if WORKER_MODULE in cmdline:
            found[int(cmdline[-1])] = child.pid
    return found


def own_connection(target: str) -> grpc.Channel:
    """A channel with a connection of its own (so the kernel may hand it to another worker)."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def served_by(daemon: Daemon, method: str, since: int) -> set[str]:
    """Which workers logged a call of ``method`` after byte ``since`` of the log."""
    text = daemon.log()[since:]
    return {line.split("[", 1)[1].split("]", 1)[0] for line in text.splitlines()
            if f" grpc_method={method} " in line and "pacsvault.access" in line and "[worker-" in line}


def test_every_worker_serves_the_shared_port_and_metrics_add_them_up(daemon: Daemon) -> None:
    assert len(workers(daemon)) == 2
    since = len(daemon.log())
    channels = [own_connection(daemon.target) for _ in range(16)]
    try:
        for channel in channels:
            archive_pb2_grpc.ArchiveServiceStub(channel).Find(
                archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY), timeout=10)
    finally:
        for channel in channels:
            channel.close()
    assert served_by(daemon, "Find", since) == {"worker-1", "worker-2"}
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    finds = sum(s.value for s in families["grpc_server_handled"].samples
                if s.name.endswith("_total") and s.labels["grpc_method"] == "Find")
    assert finds == 16, "one /metrics counts the calls of every worker"
    roles = {s.labels["role"] for s in families["pacsvault_process_cpu_seconds"].samples}
    assert roles == {"supervisor", "back-office", "worker-1", "worker-2"}


def test_a_killed_worker_is_restarted_and_loses_nothing_acknowledged(
        daemon: Daemon, corpus: list[corpus_module.GeneratedInstance]) -> None:
    before = workers(daemon)
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def store(item: corpus_module.GeneratedInstance) -> None:
        data = item.path.read_bytes()
        while time.monotonic() < deadline:  # a call cut by the kill is sent again, as a client would
            with PacsvaultClient(daemon.target, timeout=30) as client:
                result = client.store(data)
            if result.status in ("stored", "duplicate"):
                with lock:
                    acknowledged[item.sop_instance_uid] = data
                return
            assert result.code in ("UNAVAILABLE", "CANCELLED", "UNKNOWN"), result

    def killer() -> None:
        while len(acknowledged) < len(corpus) // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        psutil.Process(before[1]).send_signal(signal.SIGKILL)

    kill = threading.Thread(target=killer)
    kill.start()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(store, corpus))
    kill.join()
    assert len(acknowledged) == len(corpus), "the other worker kept serving, and retries went through"
    restarted = _wait(lambda: (w := workers(daemon)) and len(w) == 2 and w[1] != before[1] and w)
    assert restarted[2] == before[2], "the worker that was not killed kept running"
    _wait(lambda: "worker-1 is serving again" in daemon.log())
    with daemon.client() as client:
        for uid, data in acknowledged.items():
            assert client.get_instance(uid) == data
        assert client.health().index.instances == len(corpus)
    verify = json.loads(run_cli(daemon.target, "audit", "verify", "--json").stdout)
    assert verify["intact"], verify


def test_a_change_made_through_one_worker_holds_at_the_next_call_to_another(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.store(dicom_bytes(PatientID="SHARED-1", **identity(1))).ok
        share = client.create_share(study_instance_uid=identity(1)["StudyInstanceUID"], ttl_seconds=3600)
    token = share.token
    channels = [own_connection(daemon.target) for _ in range(12)]
    metadata = (("authorization", f"Bearer {token}"),)

    def find(channel: grpc.Channel) -> grpc.StatusCode:
        try:
            archive_pb2_grpc.ArchiveServiceStub(channel).Find(
                archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    try:
        assert {find(c) for c in channels} == {grpc.StatusCode.OK}
        since = len(daemon.log())
        with daemon.client() as client:
            client.revoke_share(share.share.share_id)
        assert {find(c) for c in channels} == {grpc.StatusCode.UNAUTHENTICATED}
        assert served_by(daemon, "Find", since) | _refused_by(daemon, since) >= {"worker-1", "worker-2"}
    finally:
        for channel in channels:
            channel.close()


def test_a_volume_drained_through_one_worker_takes_no_data_through_any(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "two-hot.toml"
    config.write_text(f'[[tiers]]\nname = "hot"\nvolumes = ["{tmp_path}/hot-a", "{tmp_path}/hot-b"]\n'
                      'reserve_bytes = 0\n')
    daemon = daemon_factory(config=config)
    assert run_cli(daemon.target, "tiers", "drain", f"{tmp_path}/hot-a").returncode == 0
    channels = [own_connection(daemon.target) for _ in range(8)]
    try:
        for n, channel in enumerate(channels, start=10):
            request = archive_pb2.StoreInstanceRequest(data=dicom_bytes(**identity(n)))
            archive_pb2_grpc.ArchiveServiceStub(channel).StoreInstance(iter([request]), timeout=30)
    finally:
        for channel in channels:
            channel.close()
    assert not list((tmp_path / "hot-a" / "blobs").rglob("*")) or \
        all(p.is_dir() for p in (tmp_path / "hot-a" / "blobs").rglob("*"))
    assert len([p for p in (tmp_path / "hot-b" / "blobs").rglob("*") if p.is_file()]) == 8


def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon: Daemon, daemon_factory) -> None:  # type: ignore[no-untyped-def]
    with daemon.client() as client:
        assert client.store(dicom_bytes(**identity(1))).ok
    second = daemon_factory("second", start=False)
    second.data_dir = daemon.data_dir
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        second.start(timeout=30)
    assert "in use by another pacsvaultd" in str(refused.value)
    assert f"pid {daemon.proc.pid}" in str(refused.value)  # type: ignore[union-attr]
    with daemon.client() as client:  # the first one never noticed
        assert client.store(dicom_bytes(**identity(2))).ok
    verify = json.loads(run_cli(daemon.target, "audit", "verify", "--json").stdout)
    assert verify["intact"], verify


def test_a_second_daemon_on_a_volume_in_use_is_refused(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "volume.toml"
    config.write_text(f'[[tiers]]\nname = "hot"\nvolumes = ["{tmp_path}/shared-volume"]\n')
    daemon_factory("first", config=config)
    second = daemon_factory("second", config=config, start=False)
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        second.start(timeout=30)
    assert "tier volume" in str(refused.value) and "shared-volume" in str(refused.value)


def test_a_killed_supervisor_leaves_nothing_serving(daemon: Daemon) -> None:
    assert daemon.proc is not None
    children = psutil.Process(daemon.proc.pid).children()
    assert len(children) == 3
    daemon.kill()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running: {[p.pid for p in alive]}"
    with pytest.raises(grpc.RpcError) as refused, grpc.insecure_channel(daemon.target) as channel:
        archive_pb2_grpc.ArchiveServiceStub(channel).Find(
            archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_STUDY), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    daemon.start()  # the data dir is free again at once
    with daemon.client() as client:
        assert client.serving_status() == "SERVING"


def test_sigterm_lets_uploads_on_every_worker_finish(daemon: Daemon) -> None:
    """Uploads in flight on both workers finish; the daemon then exits 0."""
    gate = threading.Event()
    results: list[object] = []

    def slow_upload(n: int) -> None:
        data = dicom_bytes(**identity(100 + n))
        half = len(data) // 2

        def requests() -> Iterator[archive_pb2.StoreInstanceRequest]:
            yield archive_pb2.StoreInstanceRequest(data=data[:half])
            gate.wait(10)
            time.sleep(0.5)  # SIGTERM has arrived meanwhile
            yield archive_pb2.StoreInstanceRequest(data=data[half:])

        with own_connection(daemon.target) as channel:
            results.append(archive_pb2_grpc.ArchiveServiceStub(channel).StoreInstance(requests(), timeout=60))

    uploads = [threading.Thread(target=slow_upload, args=(n,)) for n in range(6)]
    for upload in uploads:
        upload.start()
    time.sleep(1.0)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    gate.set()
    for upload in uploads:
        upload.join(60)
    assert len(results) == 6 and all(r.status == archive_pb2.STORE_STATUS_STORED for r in results)  # type: ignore[attr-defined]
    assert daemon.proc.wait(60) == 0


def _refused_by(daemon: Daemon, since: int) -> set[str]:
    text = daemon.log()[since:]
    return {line.split("[", 1)[1].split("]", 1)[0] for line in text.splitlines()
            if "refused Find" in line and "[worker-" in line}


def _wait(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")
