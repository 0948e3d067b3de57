"""Tiering through a real pacsvaultd: overflow while storing, a disk pulled under
load, volumes added and drained while clients store and read, the tiers CLI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from tests.conftest import Daemon, run_cli, unmount

pytestmark = pytest.mark.slow


def write_config(path: Path, hot: list[Path], capacity: list[Path], interval: float = 0.2) -> Path:
    def tier(name: str, volumes: list[Path], high: float, low: float) -> str:
        listed = ", ".join(f'"{v}"' for v in volumes)
        return (f'[[tiers]]\nname = "{name}"\nvolumes = [{listed}]\nhigh_watermark = {high}\n'
                f'low_watermark = {low}\nreserve_bytes = 0\n')
    path.write_text(
        f"[tiering]\nmover_interval_s = {interval}\naccess_flush_interval_s = {interval}\n"
        "mover_max_bytes_per_s = 1073741824\n"
        + tier("hot", hot, 0.8, 0.5) + tier("capacity", capacity, 0.95, 0.9)
    )
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("tiering-daemon-corpus"), patients=8,
                                  studies_per_patient=2, series_per_study=2, instances_per_series=4, seed=9)


def store_parallel(target: str, items: list[corpus_module.GeneratedInstance]) -> dict[str, bytes]:
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()

    def work(chunk: list[corpus_module.GeneratedInstance]) -> None:
        with PacsvaultClient(target, timeout=60) as client:
            for item in chunk:
                data = item.path.read_bytes()
                result = client.store(data)
                assert result.status == "stored", result
                with lock:
                    acknowledged[item.sop_instance_uid] = data

    threads = [threading.Thread(target=work, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acknowledged


def volumes(daemon: Daemon) -> dict[str, dict]:
    result = run_cli(daemon.target, "tiers", "--json")
    assert result.returncode == 0, result.stderr
    return {v["path"]: v for v in map(json.loads, result.stdout.splitlines())}


def wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_small_hot_tier_overflows_during_a_large_store_and_the_mover_frees_it(
    daemon_factory, tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    hot = tmpfs("hot", "4m")
    config = write_config(tmp_path / "pv.toml", [hot], [tmp_path / "capacity"])
    daemon = daemon_factory(config=config)
    acknowledged = store_parallel(daemon.target, corpus)  # never an error, though hot fills up
    listed = volumes(daemon)
    assert set(listed[str(hot)]) >= {"tier", "volume", "path", "capacity_bytes", "used_bytes", "blobs", "state"}
    assert listed[str(tmp_path / "capacity")]["blobs"] > 0
    wait_for(lambda: volumes(daemon)[str(hot)]["watermark"] == "below-low")
    with daemon.client() as client:
        for uid, data in acknowledged.items():
            assert client.get_instance(uid) == data
        tiers = {m.instance.tier for m in client.find("instance")}
        assert tiers == {"hot", "capacity"}


def test_a_volume_pulled_under_load(
    daemon_factory, tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    cap1, cap2 = tmpfs("cap1", "64m"), tmpfs("cap2", "64m")
    hot = tmpfs("hot", "1m")  # tiny: nearly everything lands on the capacity volumes
    config = write_config(tmp_path / "pv.toml", [hot], [cap1, cap2], interval=60)
    daemon = daemon_factory(config=config)
    first = store_parallel(daemon.target, corpus[: len(corpus) // 2])
    unmount(cap1)  # the disk disappears while the appliance is in use
    second = store_parallel(daemon.target, corpus[len(corpus) // 2 :])  # stores go on, elsewhere
    assert not list(cap1.iterdir()), "nothing was written into the empty mount point"
    lost_volume, served = 0, 0
    # retry=None: a read of the lost volume answers UNAVAILABLE, which the client's retry policy
    # would otherwise retry for ~8 s per instance before giving the same answer.
    with daemon.client(retry=None) as client:
        for uid, data in {**first, **second}.items():
            try:
                assert client.get_instance(uid) == data
                served += 1
            except Exception as exc:  # noqa: BLE001 - inspected right here
                assert exc.code().name == "UNAVAILABLE", exc
                assert str(cap1) in exc.details()
                lost_volume += 1
        assert lost_volume > 0 and served > 0
        for uid, data in second.items():
            assert client.get_instance(uid) == data  # everything stored after the loss is fine
        health = client.health()
        assert any(str(cap1) in reason for reason in health.reasons)
    assert volumes(daemon)[str(cap1)]["state"] == "failed"


def test_add_and_drain_volumes_while_clients_store_and_read(
    daemon_factory, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    config = write_config(tmp_path / "pv.toml", [tmp_path / "hot"], [tmp_path / "cap1"], interval=0.2)
    daemon = daemon_factory(config=config)
    acknowledged = store_parallel(daemon.target, corpus[:40])
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        with PacsvaultClient(daemon.target, timeout=60) as client:
            while not stop.is_set():
                for uid, data in list(acknowledged.items()):
                    try:
                        assert client.get_instance(uid) == data
                    except BaseException as exc:  # noqa: BLE001 - collected for the main thread
                        errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    new_volume = tmp_path / "cap2"
    new_volume.mkdir()
    assert run_cli(daemon.target, "tiers", "add-volume", "capacity", str(new_volume)).returncode == 0
    drained = run_cli(daemon.target, "tiers", "drain", str(tmp_path / "hot"))
    assert drained.returncode == 0, drained.stderr
    acknowledged.update(store_parallel(daemon.target, corpus[40:]))  # stores go on during the drain
    wait_for(lambda: volumes(daemon)[str(tmp_path / "hot")]["state"] == "drained", timeout=60)
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[:3]
    listed = volumes(daemon)
    assert listed[str(tmp_path / "hot")]["blobs"] == 0
    assert listed[str(new_volume)]["blobs"] + listed[str(tmp_path / "cap1")]["blobs"] == len(acknowledged)
    with daemon.client() as client:
        for uid, data in acknowledged.items():
            assert client.get_instance(uid) == data


def test_tiers_plan_pin_and_prefetch_from_the_cli(
    daemon_factory, tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    hot = tmpfs("hot", "4m")
    config = write_config(tmp_path / "pv.toml", [hot], [tmp_path / "capacity"], interval=3600)  # mover idle
    daemon = daemon_factory(config=config)
    store_parallel(daemon.target, corpus)
    plan = run_cli(daemon.target, "tiers", "plan", "--json")
    assert plan.returncode == 0, plan.stderr
    moves = [json.loads(line) for line in plan.stdout.splitlines()]
    assert moves and {m["reason"] for m in moves} == {"watermark"}
    assert all(m["from_tier"] == "hot" and m["to_tier"] == "capacity" for m in moves)
    assert run_cli(daemon.target, "tiers", "plan").stdout.strip().endswith("(nothing was moved)")
    study = corpus[0].study_instance_uid
    pinned = run_cli(daemon.target, "pin", study, "--until", "20991231")
    assert pinned.returncode == 0 and "until 20991231" in pinned.stdout
    bad = run_cli(daemon.target, "pin", study, "--until", "31/12/2099")
    assert bad.returncode == 6 and "INVALID_ARGUMENT" in bad.stderr  # rejected input
    missing = run_cli(daemon.target, "pin", "1.2.3.404", "--until", "20991231")
    assert missing.returncode == 3 and "NOT_FOUND" in missing.stderr  # not found
    prefetch = run_cli(daemon.target, "prefetch", corpus[-1].patient_id)
    assert prefetch.returncode == 0 and "queued for the fastest tier" in prefetch.stdout
    metadata = daemon.client().study_metadata(study)
    assert metadata


def test_sighup_takes_a_volume_newly_listed_in_the_config_into_use(
    daemon_factory, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    import signal

    config = write_config(tmp_path / "pv.toml", [tmp_path / "hot"], [tmp_path / "cap1"], interval=3600)
    daemon = daemon_factory(config=config)
    (tmp_path / "cap2").mkdir()
    write_config(config, [tmp_path / "hot"], [tmp_path / "cap1", tmp_path / "cap2"], interval=3600)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: str(tmp_path / "cap2") in volumes(daemon))
    assert volumes(daemon)[str(tmp_path / "cap2")]["state"] == "active"
    assert daemon.alive
    # A broken config on SIGHUP changes nothing and the daemon keeps serving.
    config.write_text("[tiering]\nmover_interval_s = -1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert daemon.alive and len(volumes(daemon)) == 3
    assert "config not reloaded" in daemon.log()
