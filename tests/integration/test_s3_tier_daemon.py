"""An object-store tier through a real pacsvaultd against a real Ceph: overflow, demotion and promotion,
a drain into the bucket, the gateway stopped mid-move and started again, a gateway that stops
answering, a deleted object, wrong credentials and a missing bucket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from pacsvault.daemon import config as config_module
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.daemon.replication import certs
from pacsvault.daemon.digest import address_of
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from tests.ceph_cluster import CephCluster
from tests.ports import free_port
from tests.conftest import Daemon, run_cli
from tests.s3_support import new_bucket, plain_client, s3_credentials_env, s3_tier

pytestmark = pytest.mark.slow
# How late an answer may come after the caller's deadline (scheduling on a busy 2-core host).
MARGIN_S = 0.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("s3-daemon-corpus"), patients=4, studies_per_patient=2,
                                  series_per_study=2, instances_per_series=3, seed=21)


@pytest.fixture
def gateway(ceph: CephCluster) -> Iterator[CephCluster]:
    """The cluster, with its gateway running again after the test whatever the test did to it."""
    yield ceph
    if "rgw" in ceph.pids():
        ceph.resume_gateway()
    ceph.start_gateway()


def write_config(path: Path, tiers: list[dict[str, Any]], replication: dict[str, Any] | None = None,
                 **tiering: Any) -> Path:
    settings = {"mover_interval_s": 0.2, "access_flush_interval_s": 0.2, "mover_max_bytes_per_s": 1 << 30,
                **tiering}
    lines = ["[tiering]", *(f"{k} = {_toml(v)}" for k, v in settings.items())]
    if replication:
        lines += ["[replication]", *(f"{k} = {_toml(v)}" for k, v in replication.items())]
    for tier in tiers:
        lines += ["", "[[tiers]]", *(f"{k} = {_toml(v)}" for k, v in tier.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, (str, int, float)) else str(value)


def archive_tier(ceph: CephCluster, bucket: str, **overrides: Any) -> dict[str, Any]:
    """The object-store tier; the daemon takes its credentials from its environment."""
    return s3_tier(ceph, bucket, s3_profile="", **overrides)


def local_tier(name: str, *paths: Path, high: float = 0.99, low: float = 0.98) -> dict[str, Any]:
    return {"name": name, "volumes": [str(p) for p in paths], "high_watermark": high, "low_watermark": low,
            "reserve_bytes": 0}


def store_parallel(target: str, items: list[corpus_module.GeneratedInstance]) -> tuple[dict[str, bytes], float]:
    """Stores with four clients; every store must succeed. Returns what was stored and the slowest store's time."""
    acknowledged: dict[str, bytes] = {}
    slowest = [0.0]
    lock = threading.Lock()

    def work(chunk: list[corpus_module.GeneratedInstance]) -> None:
        with PacsvaultClient(target, timeout=60) as client:
            for item in chunk:
                data = item.path.read_bytes()
                started = time.monotonic()
                result = client.store(data)
                took = time.monotonic() - started
                assert result.status == "stored", result
                with lock:
                    acknowledged[item.sop_instance_uid] = data
                    slowest[0] = max(slowest[0], took)

    threads = [threading.Thread(target=work, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acknowledged) == len(items)
    return acknowledged, slowest[0]


def volumes(daemon: Daemon) -> dict[str, dict]:
    result = run_cli(daemon.target, "tiers", "--json")
    assert result.returncode == 0, result.stderr
    return {v["tier"] if v["backend"] == "s3" else v["path"]: v for v in map(json.loads, result.stdout.splitlines())}


def tiers_of(daemon: Daemon) -> dict[str, str]:
    with daemon.client() as client:
        return {m.instance.sop_instance_uid: m.instance.tier for m in client.find("instance")}


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def check_reads(daemon: Daemon, expected: dict[str, bytes]) -> None:
    with daemon.client() as client:
        for uid, data in expected.items():
            assert client.get_instance(uid) == data


def test_ingest_overflows_into_the_store_the_mover_demotes_there_and_a_read_brings_a_study_back(
        daemon_factory, tmpfs, ceph: CephCluster, tmp_path: Path,  # type: ignore[no-untyped-def]
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    hot = tmpfs("hot", "4m")
    bucket = new_bucket(ceph)
    config = write_config(tmp_path / "pv.toml", [local_tier("hot", hot, high=0.8, low=0.5),
                                                 archive_tier(ceph, bucket, s3_quota_bytes=1 << 30)])
    daemon = daemon_factory(config=config, env=s3_credentials_env(ceph))
    acknowledged, _ = store_parallel(daemon.target, corpus)  # never an error, though hot fills up
    listed = volumes(daemon)
    archive = listed["archive"]
    assert archive["backend"] == "s3" and archive["state"] == "active" and archive["volume_class"] == "object"
    assert archive["capacity_bytes"] == 1 << 30 and archive["blobs"] > 0
    assert archive["path"] == f"{ceph.endpoint}/{bucket}/"
    wait_for(lambda: volumes(daemon)[str(hot)]["watermark"] == "below-low", what="hot freed by the mover")
    check_reads(daemon, acknowledged)
    on_tier = tiers_of(daemon)
    assert set(on_tier.values()) == {"hot", "archive"}
    # The smallest study down there: one larger than the hot tier holds is read where it is, never promoted.
    sizes: dict[str, int] = {}
    for item in corpus:
        sizes[item.study_instance_uid] = sizes.get(item.study_instance_uid, 0) + item.path.stat().st_size
    wanted = min({i.study_instance_uid for i in corpus if on_tier[i.sop_instance_uid] == "archive"},
                 key=sizes.__getitem__)
    with daemon.client() as client:
        client.save_study(wanted, str(tmp_path / "out"))  # a viewer opens a study from the store
    study = {i.sop_instance_uid for i in corpus if i.study_instance_uid == wanted}
    wait_for(lambda: {tiers_of(daemon)[uid] for uid in study} == {"hot"}, what="the study promoted")
    check_reads(daemon, acknowledged)
    health = run_cli(daemon.target, "health", "--json")
    report = json.loads(health.stdout)
    archive_health = next(v for v in report["volumes"] if v["tier"] == "archive")
    attributes = {r["attribute"] for r in archive_health["reasons"]}
    assert {"errors", "latency"} <= attributes, archive_health


def test_a_disk_drains_into_the_bucket_and_a_deleted_object_is_data_loss(
        daemon_factory, ceph: CephCluster, tmp_path: Path,  # type: ignore[no-untyped-def]
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    config = write_config(tmp_path / "pv.toml", [local_tier("hot", tmp_path / "hot"), archive_tier(ceph, bucket)])
    daemon = daemon_factory(config=config, env=s3_credentials_env(ceph))
    acknowledged, _ = store_parallel(daemon.target, corpus[:24])
    drained = run_cli(daemon.target, "tiers", "drain", str(tmp_path / "hot"))
    assert drained.returncode == 0, drained.stderr
    wait_for(lambda: volumes(daemon)[str(tmp_path / "hot")]["state"] == "drained", what="hot drained")
    assert volumes(daemon)["archive"]["blobs"] == len(acknowledged)
    assert set(tiers_of(daemon).values()) == {"archive"}
    check_reads(daemon, acknowledged)
    refused = run_cli(daemon.target, "tiers", "add-volume", "archive", str(tmp_path / "more"))
    assert refused.returncode != 0 and "object-store tier" in refused.stderr
    # An object deleted behind our back: that instance is DATA_LOSS, named; the others are served.
    gone = corpus[0].sop_instance_uid
    keys = open_keys(config_module.from_dict({"data_dir": str(daemon.data_dir)}))
    assert keys is not None
    address = address_of(acknowledged[gone], BlobSealer(keys).address_key)
    plain_client(ceph).delete_object(Bucket=bucket, Key=f"blobs/blake3/{address.hex[:2]}/{address.hex}")
    with daemon.client() as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(gone)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS and gone in caught.value.details()
    check_reads(daemon, {u: d for u, d in acknowledged.items() if u != gone})


def test_the_gateway_stopped_mid_move_pauses_the_mover_reads_answer_unavailable_ingest_goes_on(
        daemon_factory, tmpfs, gateway: CephCluster, tmp_path: Path,  # type: ignore[no-untyped-def]
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    ceph = gateway
    hot, hot2 = tmpfs("hot", "4m"), tmpfs("hot2", "32m")
    config = write_config(tmp_path / "pv.toml", [
        local_tier("hot", hot, high=0.5, low=0.1),
        archive_tier(ceph, new_bucket(ceph), s3_timeout_s=2.0, s3_connect_timeout_s=0.5, s3_read_timeout_s=1.0),
    ], mover_max_bytes_per_s=256 << 10)
    daemon = daemon_factory(config=config, env=s3_credentials_env(ceph))
    # Past hot's high watermark: what does not fit goes to the store, and the mover starts demoting.
    # The gateway stops wherever the mover is then (test_s3_tier stops it after each step exactly).
    first, _ = store_parallel(daemon.target, corpus[:36])
    ceph.stop_gateway()
    # A new disk takes the stores that come meanwhile (hot itself is at its high watermark).
    assert run_cli(daemon.target, "tiers", "add-volume", "hot", str(hot2)).returncode == 0
    second, slowest = store_parallel(daemon.target, corpus[36:])
    assert slowest < 5.0, f"a store waited {slowest:.1f}s while the object store was away"
    wait_for(lambda: volumes(daemon)["archive"]["state"] == "failed", timeout=30, what="the tier marked failed")
    on_tier = tiers_of(daemon)
    in_store = [uid for uid, tier in on_tier.items() if tier == "archive"]
    assert in_store, "some blobs were in the store"
    with PacsvaultClient(daemon.target, timeout=2.0) as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(in_store[0])
        assert time.monotonic() - started <= 2.0 + MARGIN_S
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "archive" in caught.value.details()
        for uid in [u for u, tier in on_tier.items() if tier != "archive"]:
            assert client.get_instance(uid) == {**first, **second}[uid]
    report = json.loads(run_cli(daemon.target, "health", "--json").stdout)
    assert report["state"] == "critical" and any("archive" in r for r in report["reasons"]), report["reasons"]
    ceph.start_gateway()
    wait_for(lambda: volumes(daemon)["archive"]["state"] == "active", timeout=90, what="the tier back")
    with PacsvaultClient(daemon.target, timeout=10) as client:
        wait_for(lambda: not client.plan_moves().moves and not client.list_volumes().mover.interrupted_moves,
                 timeout=120, what="the mover resumed and finished")
    # The read that failed while the store was away asked for its study; it came up once the store was back.
    wait_for(lambda: tiers_of(daemon)[in_store[0]] == "hot", what="the study read meanwhile promoted")
    check_reads(daemon, {**first, **second})
    assert "Traceback" not in daemon.log()


def test_a_store_that_stops_answering_is_unavailable_within_the_callers_deadline(
        daemon_factory, gateway: CephCluster, tmp_path: Path,  # type: ignore[no-untyped-def]
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    ceph = gateway
    config = write_config(tmp_path / "pv.toml", [local_tier("hot", tmp_path / "hot"), archive_tier(ceph, new_bucket(ceph))],
                          promote_on_access=False)
    daemon = daemon_factory(config=config, env=s3_credentials_env(ceph))
    acknowledged, _ = store_parallel(daemon.target, corpus[:6])
    assert run_cli(daemon.target, "tiers", "drain", str(tmp_path / "hot")).returncode == 0
    wait_for(lambda: volumes(daemon)[str(tmp_path / "hot")]["state"] == "drained", what="hot drained")
    (tmp_path / "hot2").mkdir()
    assert run_cli(daemon.target, "tiers", "add-volume", "hot", str(tmp_path / "hot2")).returncode == 0
    ceph.pause_gateway()  # it keeps its port open, and answers nothing
    try:
        uid = corpus[0].sop_instance_uid
        for deadline_s in (1.0, 2.5):
            with PacsvaultClient(daemon.target, timeout=deadline_s) as client:
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    client.get_instance(uid)
                took = time.monotonic() - started
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            assert "archive" in caught.value.details() and took <= deadline_s + MARGIN_S, (took, caught.value)
        more, slowest = store_parallel(daemon.target, corpus[6:10])  # ingest is not held up
        assert slowest < 5.0
    finally:
        ceph.resume_gateway()
    check_reads(daemon, {**acknowledged, **more})


def test_wrong_credentials_and_a_missing_bucket_are_clear_errors_and_ingest_goes_on(
        daemon_factory, ceph: CephCluster, tmp_path: Path,  # type: ignore[no-untyped-def]
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    bucket = new_bucket(ceph)
    config = write_config(tmp_path / "pv.toml", [local_tier("hot", tmp_path / "hot"), archive_tier(ceph, bucket)])
    wrong = s3_credentials_env(ceph, AWS_SECRET_ACCESS_KEY="not-the-secret")
    daemon = daemon_factory(config=config, env=wrong)
    store_parallel(daemon.target, corpus[:2])
    archive = volumes(daemon)["archive"]
    assert archive["state"] == "refused" and "secret key" in archive["reason"], archive
    health = run_cli(daemon.target, "health")
    assert health.returncode == 1 and "check the S3 credentials" in health.stdout, health.stdout
    daemon.stop()
    # Right credentials: taken into use; then wrong again at a later start: failed, not refused.
    daemon = daemon_factory(name="appliance", config=config, env=s3_credentials_env(ceph))
    assert volumes(daemon)["archive"]["state"] == "active"
    assert run_cli(daemon.target, "tiers", "drain", str(tmp_path / "hot")).returncode == 0
    wait_for(lambda: volumes(daemon)[str(tmp_path / "hot")]["state"] == "drained", what="hot drained")
    daemon.stop()
    (tmp_path / "hot2").mkdir()
    daemon = daemon_factory(name="appliance", config=write_config(
        tmp_path / "pv.toml", [local_tier("hot", tmp_path / "hot", tmp_path / "hot2"), archive_tier(ceph, bucket)]),
        env=wrong)
    archive = volumes(daemon)["archive"]
    assert archive["state"] == "failed" and "secret key" in archive["reason"], archive
    with PacsvaultClient(daemon.target, timeout=10) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.get_instance(corpus[0].sop_instance_uid)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "archive" in caught.value.details()
    store_parallel(daemon.target, corpus[2:4])
    daemon.stop()
    missing = write_config(tmp_path / "missing.toml", [local_tier("hot", tmp_path / "hot3"),
                                                       archive_tier(ceph, "pv-no-such-bucket")])
    other = daemon_factory(name="other", config=missing, env=s3_credentials_env(ceph))
    archive = volumes(other)["archive"]
    assert archive["state"] == "refused" and "'pv-no-such-bucket' does not exist" in archive["reason"]
    store_parallel(other.target, corpus[:2])
    for log in (daemon.log(), other.log()):
        assert "Traceback" not in log


def test_an_object_deleted_or_changed_behind_our_back_is_repaired_from_the_peer(
        daemon_factory, ceph: CephCluster, tmp_path: Path,  # type: ignore[no-untyped-def]
        corpus: list[corpus_module.GeneratedInstance]) -> None:
    cert_dir = tmp_path / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": free_port(), "site-b": free_port()}

    def replication(name: str, peer: str) -> dict[str, Any]:
        return {"enabled": True, "appliance_name": name, "peer_name": peer, "peer_address": f"127.0.0.1:{ports[peer]}",
                "listen": f"127.0.0.1:{ports[name]}", "ca_file": str(cert_dir / "ca.pem"),
                "cert_file": str(cert_dir / f"{name}.pem"), "key_file": str(cert_dir / f"{name}.key"),
                "sender_interval_s": 0.2, "max_backoff_s": 1.0}

    bucket = new_bucket(ceph)
    a_config = write_config(tmp_path / "a.toml", [local_tier("hot", tmp_path / "a-hot"), archive_tier(ceph, bucket)],
                            replication("site-a", "site-b"))
    b_config = write_config(tmp_path / "b.toml", [local_tier("hot", tmp_path / "b-hot")], replication("site-b", "site-a"))
    daemon_factory("site-b", config=b_config)
    a = daemon_factory("site-a", config=a_config, env=s3_credentials_env(ceph))
    acknowledged, _ = store_parallel(a.target, corpus[:6])
    wait_for(lambda: json.loads(run_cli(a.target, "replication", "status", "--json").stdout)["pending_entries"] == 0,
             what="replicated to the peer")
    assert run_cli(a.target, "tiers", "drain", str(tmp_path / "a-hot")).returncode == 0
    wait_for(lambda: volumes(a)[str(tmp_path / "a-hot")]["state"] == "drained", what="hot drained into the bucket")
    keys = open_keys(config_module.from_dict({"data_dir": str(a.data_dir)}))
    assert keys is not None
    sealer, plain = BlobSealer(keys), plain_client(ceph)

    def key_of(uid: str) -> str:
        address = address_of(acknowledged[uid], sealer.address_key)
        return f"blobs/blake3/{address.hex[:2]}/{address.hex}"

    deleted, changed = corpus[0].sop_instance_uid, corpus[1].sop_instance_uid
    plain.delete_object(Bucket=bucket, Key=key_of(deleted))
    body = bytearray(plain.get_object(Bucket=bucket, Key=key_of(changed))["Body"].read())
    body[len(body) // 2] ^= 0x01
    plain.put_object(Bucket=bucket, Key=key_of(changed), Body=bytes(body))
    check_reads(a, acknowledged)  # both come back from the peer's shards, verified
    quarantined = plain.list_objects_v2(Bucket=bucket, Prefix="quarantine/").get("Contents", [])
    assert len(quarantined) == 1, "the changed object was kept aside with its reason, not deleted"
    check_reads(a, acknowledged)  # and read again from their new copies
