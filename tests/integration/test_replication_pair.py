"""Two real appliances on loopback, peers over mutual TLS: replication, backlog
across outages, repair from the peer, DATA_LOSS past m lost shards, disaster
recovery, and refusal of callers without the right certificate."""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pacsvault.client import corpus as corpus_module
from pacsvault.daemon.replication import certs
from pacsvault.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import Daemon, run_cli, start_together
from tests.ports import free_port

pytestmark = pytest.mark.slow



@dataclass
class Pair:
    a: Daemon
    b: Daemon
    cert_dir: Path
    peer_ports: dict[str, int]


def config_for(name: str, peer: str, cert_dir: Path, listen: int, peer_port: int, path: Path) -> Path:
    path.write_text(
        "[replication]\nenabled = true\n"
        f'appliance_name = "{name}"\npeer_name = "{peer}"\n'
        f'peer_address = "127.0.0.1:{peer_port}"\nlisten = "127.0.0.1:{listen}"\n'
        f'ca_file = "{cert_dir / "ca.pem"}"\ncert_file = "{cert_dir / (name + ".pem")}"\n'
        f'key_file = "{cert_dir / (name + ".key")}"\n'
        "sender_interval_s = 0.2\nmax_backoff_s = 1.0\nrpo_warning_s = 2.0\n"
    )
    return path


@pytest.fixture
def pair(daemon_factory, tmp_path: Path) -> Pair:  # type: ignore[no-untyped-def]
    cert_dir = tmp_path / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]}, clients=["intruder"])
    ports = {"site-a": free_port(), "site-b": free_port()}
    a_config = config_for("site-a", "site-b", cert_dir, ports["site-a"], ports["site-b"], tmp_path / "a.toml")
    b_config = config_for("site-b", "site-a", cert_dir, ports["site-b"], ports["site-a"], tmp_path / "b.toml")
    b = daemon_factory("site-b", config=b_config, start=False)
    a = daemon_factory("site-a", config=a_config, start=False)
    start_together(a, b)
    return Pair(a, b, cert_dir, ports)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("pair-corpus"), patients=4, studies_per_patient=2,
                                  series_per_study=2, instances_per_series=3, seed=21)


def store(daemon: Daemon, items: list[corpus_module.GeneratedInstance]) -> dict[str, bytes]:
    stored = {}
    with daemon.client() as client:
        for item in items:
            data = item.path.read_bytes()
            assert client.store(data).status == "stored"
            stored[item.sop_instance_uid] = data
    return stored


def status(daemon: Daemon) -> dict:
    result = run_cli(daemon.target, "replication", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_drained(daemon: Daemon, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        current = status(daemon)
        if current["pending_entries"] == 0:
            return current
        assert time.monotonic() < deadline, f"backlog did not drain: {current}"
        time.sleep(0.2)


def shard_files(daemon: Daemon) -> list[Path]:
    return sorted(p for p in daemon.data_dir.glob("tiers/*/replica/shards/**/*") if p.is_file())


def blob_files(daemon: Daemon) -> list[Path]:
    return sorted(p for p in daemon.data_dir.glob("tiers/*/blobs/**/*") if p.is_file())


def test_every_instance_reaches_the_peer_erasure_coded(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    stored = store(pair.a, corpus)
    done = wait_drained(pair.a)
    assert set(done) >= {"peer", "state", "pending_entries", "pending_bytes", "oldest_pending_age_s"}
    assert done["peer"] == "site-b" and done["blobs_replicated"] == len(stored)
    shards = shard_files(pair.b)
    assert len(shards) == 6 * len(stored), "4 + 2 shards for each blob, no duplicates"
    # The peer keeps shards, never whole copies in its own archive.
    with pair.b.client() as client:
        assert client.health().index.instances == 0


def test_store_while_the_peer_is_down_then_the_backlog_drains(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    pair.b.stop()
    stored = store(pair.a, corpus)
    time.sleep(2.5)
    waiting = status(pair.a)
    assert waiting["pending_entries"] == len(stored)
    assert waiting["state"] in ("unreachable", "backing-off")
    assert waiting["oldest_pending_age_s"] > 2.0
    result = run_cli(pair.a.target, "replication", "status")
    assert result.returncode == 1 and "past the RPO warning" in result.stdout
    with pair.a.client() as client:
        health = client.health()
        assert any("replication" in reason for reason in health.reasons)
    pair.a.stop()  # both sides restart: the outbox survives
    start_together(pair.a, pair.b)
    assert wait_drained(pair.a)["pending_entries"] == 0
    assert len(shard_files(pair.b)) == 6 * len(stored)


def test_sigkill_of_sender_and_receiver_mid_stream(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    pair.b.stop()
    stored = store(pair.a, corpus)
    pair.b.start()
    time.sleep(0.3)
    pair.b.stop(signal.SIGKILL)  # the receiver dies mid-stream
    pair.a.stop(signal.SIGKILL)  # and so does the sender
    start_together(pair.a, pair.b)
    wait_drained(pair.a)
    assert len(shard_files(pair.b)) == 6 * len(stored), "nothing missing, nothing duplicated"


def test_a_lost_or_corrupt_local_blob_is_repaired_from_the_peer(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    stored = store(pair.a, corpus[:6])
    wait_drained(pair.a)
    files = blob_files(pair.a)
    files[0].unlink()
    raw = bytearray(files[1].read_bytes())
    raw[len(raw) // 2] ^= 0x40
    files[1].write_bytes(bytes(raw))
    with pair.a.client() as client:
        for uid, data in stored.items():
            assert client.get_instance(uid) == data
    assert len(blob_files(pair.a)) == len(stored), "repaired copies are written back"
    assert list(pair.a.data_dir.glob("tiers/*/quarantine/*.reason")), "the corrupt copy is kept aside with a reason"
    assert status(pair.a)["repairs"] == 2


def test_more_than_m_lost_shards_is_data_loss_never_wrong_bytes(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    item = corpus[0]
    store(pair.a, [item])
    wait_drained(pair.a)
    shards = shard_files(pair.b)
    for shard in shards[:2]:  # m = 2 lost: still repairable
        shard.unlink()
    blob_files(pair.a)[0].unlink()
    with pair.a.client() as client:
        assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()
    for shard in shard_files(pair.b)[:3]:  # m + 1 lost
        shard.unlink()
    blob_files(pair.a)[0].unlink()
    with pair.a.client() as client, pytest.raises(grpc.RpcError) as info:
        client.get_instance(item.sop_instance_uid)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert item.sop_instance_uid in info.value.details() and item.study_instance_uid in info.value.details()


def test_wipe_the_primary_and_restore_from_the_peer(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    stored = store(pair.a, corpus)
    wait_drained(pair.a)
    pair.a.stop()
    shutil.rmtree(pair.a.data_dir)  # the site is lost
    pair.a.start()
    with pair.a.client() as client:
        assert client.health().index.instances == 0
    result = run_cli(pair.a.target, "restore", "--from-peer", "--json")
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.splitlines()[-1])
    assert (last["restored"], last["failed"]) == (len(stored), 0)
    again = run_cli(pair.a.target, "restore", "--from-peer", "--json")  # resumable: nothing left to do
    assert json.loads(again.stdout.splitlines()[-1])["already_present"] == len(stored)
    with pair.a.client() as client:
        for uid, data in stored.items():
            assert client.get_instance(uid) == data
        assert len(list(client.find("study"))) == len({i.study_instance_uid for i in corpus})
    assert status(pair.a)["pending_entries"] == 0, "restored data is not sent back"


def test_an_empty_replacement_peer_is_reseeded(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    stored = store(pair.a, corpus[:10])
    wait_drained(pair.a)
    pair.b.stop()
    shutil.rmtree(pair.b.data_dir)
    pair.b.start()
    result = run_cli(pair.a.target, "replication", "reseed")
    assert result.returncode == 0 and f"{len(stored)} instances" in result.stdout
    wait_drained(pair.a)
    assert len(shard_files(pair.b)) == 6 * len(stored)


def test_the_peer_listener_refuses_callers_without_a_valid_certificate(pair: Pair) -> None:
    address = f"127.0.0.1:{pair.peer_ports['site-b']}"
    request = peer_pb2.ListReplicaRecordsRequest()
    plaintext = peer_pb2_grpc.PeerServiceStub(grpc.insecure_channel(address))
    with pytest.raises(grpc.RpcError) as info:
        plaintext.ListReplicaRecords(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    ca = (pair.cert_dir / "ca.pem").read_bytes()
    no_cert = peer_pb2_grpc.PeerServiceStub(grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)))
    with pytest.raises(grpc.RpcError) as info:
        no_cert.ListReplicaRecords(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    other_ca = certs.make_ca("another CA")
    rogue = certs.issue_cert(other_ca, "site-a", ip_addresses=["127.0.0.1"])
    wrong_ca = peer_pb2_grpc.PeerServiceStub(grpc.secure_channel(address, grpc.ssl_channel_credentials(
        ca, rogue.key_pem(), rogue.cert_pem())))
    with pytest.raises(grpc.RpcError) as info:
        wrong_ca.ListReplicaRecords(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # A valid certificate of the right CA that is not the peer: authenticated, not allowed.
    intruder = peer_pb2_grpc.PeerServiceStub(grpc.secure_channel(address, grpc.ssl_channel_credentials(
        ca, (pair.cert_dir / "intruder.key").read_bytes(), (pair.cert_dir / "intruder.pem").read_bytes())))
    with pytest.raises(grpc.RpcError) as info:
        intruder.ListReplicaRecords(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_every_blob_file_of_the_primary_lost_is_read_back_through_repair(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    stored = store(pair.a, corpus)
    wait_drained(pair.a)
    pair.a.stop()
    for blob in blob_files(pair.a):
        blob.unlink()  # every blob gone from the primary's tiers, the index intact
    pair.a.start()
    with pair.a.client() as client:
        for uid, data in stored.items():
            assert client.get_instance(uid) == data
    assert len(blob_files(pair.a)) == len(stored)
    assert status(pair.a)["repairs"] == len(stored)


def test_a_peer_serving_wrong_shard_bytes_is_caught(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    item = corpus[1]
    store(pair.a, [item])
    wait_drained(pair.a)
    for shard in shard_files(pair.b)[:2]:  # m shards silently rotted at the peer
        raw = bytearray(shard.read_bytes())
        raw[-10] ^= 0x01
        shard.write_bytes(bytes(raw))
    blob_files(pair.a)[0].unlink()
    with pair.a.client() as client:
        assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()
    shard = shard_files(pair.b)[2]  # and one more: now past what 4+2 can survive
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0x01
    shard.write_bytes(bytes(raw))
    blob_files(pair.a)[0].unlink()
    with pair.a.client() as client, pytest.raises(grpc.RpcError) as info:
        client.get_instance(item.sop_instance_uid)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS


def test_no_file_the_pair_writes_is_readable_by_others(daemon_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       corpus: list) -> None:  # type: ignore[type-arg]
    """Index, blobs, shards, audit trail and checkpoints, cursors, health state: 0600 or 0640, whatever the umask.

    Their contents are sealed, but a file for everyone still tells everyone how much is stored and when.
    """
    cert_dir = tmp_path / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": free_port(), "site-b": free_port()}
    daemons = []
    for name, peer in (("site-b", "site-a"), ("site-a", "site-b")):
        config = config_for(name, peer, cert_dir, ports[name], ports[peer], tmp_path / f"{name}.toml")
        config.write_text(config.read_text() + "scrub_interval_s = 0.2\n[audit]\ncheckpoint_every = 5\n")
        daemons.append(daemon_factory(name, config=config))
    b, a = daemons
    store(a, corpus[:12])
    wait_drained(a)
    time.sleep(1.0)  # a scrub pass on the peer, its cursor written
    assert list(a.data_dir.glob("audit/*.checkpoints")), "the test needs an audit checkpoint to look at"
    assert list(b.data_dir.glob("tiers/*/replica/shards/**/*.*")), "and shards"
    for daemon in (a, b):
        roots = [daemon.data_dir, daemon.data_dir.parent / f"{daemon.data_dir.name}-keys"]
        files = [p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        loose = sorted(f"{p.stat().st_mode & 0o777:o} {p.relative_to(daemon.data_dir.parent)}" for p in files
                       if p.stat().st_mode & 0o027)
        assert loose == [], loose
