"""pacsvault check [--json] [--repair] (issue 15, item 2): every class of inconsistency found on
real files, a non-zero exit while any is left, and repairs that are safe."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import blake3
import pytest

from pacsvault.daemon import config as config_module
from pacsvault.daemon.index import outbox
from pacsvault.daemon.index.records import BlobRecord, OutboxEntry, decode, encode
from pacsvault.daemon.processes.in_process import InProcess
from tests.conftest import Daemon, dicom_bytes, identity, run_cli
from tests.integration.test_replication_pair import blob_files, shard_files, wait_drained
from tests.integrity.pairs import make_pair

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.158"
DAY = 86400


def check(daemon: Daemon, *extra: str) -> tuple[int, list[dict], dict]:
    result = run_cli(daemon.target, "check", "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return result.returncode, [line for line in lines if "kind" in line], lines[-1]["summary"]


def store(daemon: Daemon, count: int, patient: str) -> dict[str, bytes]:
    stored = {}
    with daemon.client() as client:
        for n in range(count):
            data = dicom_bytes(PatientID=patient, **identity(n, f"{ROOT}.{len(patient)}"))
            assert client.store(data).ok
            stored[identity(n, f"{ROOT}.{len(patient)}")["SOPInstanceUID"]] = data
    return stored


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_check_lists_each_class_and_repair_puts_right_what_is_safe(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory()
    store(daemon, 4, "CHECK")
    assert check(daemon)[0] == 0, "a fresh appliance is consistent"
    files = blob_files(daemon)
    # An old orphan (a copy no record names), a young one, an old temp file, a lost blob (dangling).
    old_orphan = aged(_copy_as_orphan(files[0], "aa"), 2 * DAY)
    young_orphan = _copy_as_orphan(files[0], "bb")
    files[1].unlink()
    # And a refcount gone wrong, made offline with the daemon stopped.
    daemon.stop()
    _bump_a_refcount(daemon.data_dir, tmp_path / "run-offline")
    daemon.start()  # (a start removes temp files: this one is left after it)
    temp = aged(_write(daemon.data_dir / "tiers/hot/tmp/deadbeef.tmp", b"half a blob"), 2 * DAY)

    code, findings, summary = check(daemon)
    assert code == 1
    kinds = sorted(f["kind"] for f in findings)
    assert kinds == ["dangling", "orphan", "orphan", "refcount", "temp-file"], findings
    assert summary["counts"] == {"dangling": 1, "orphan": 2, "refcount": 1, "temp-file": 1}
    assert old_orphan.exists() and temp.exists(), "check alone changes nothing"

    code, findings, _ = check(daemon, "--repair")
    actions = {f["kind"] + ":" + Path(f["subject"]).name[:2]: f["action"] for f in findings}
    assert code == 1, findings  # the young orphan and the dangling entry are left
    assert not old_orphan.exists() and young_orphan.exists() and not temp.exists()
    assert actions["orphan:aa"] == "deleted" and actions["orphan:bb"].startswith("left: ")
    dangling = next(f for f in findings if f["kind"] == "dangling")
    assert dangling["action"].startswith("left: ") and "peer" in dangling["action"], "never dropped silently"
    assert next(f for f in findings if f["kind"] == "refcount")["action"] == "repaired"
    _, findings, summary = check(daemon)
    assert summary["counts"] == {"dangling": 1, "orphan": 1}  # what was left, and only that
    human = run_cli(daemon.target, "check")
    assert human.returncode == 1 and "dangling" in human.stdout and "1 dangling, 1 orphan" in human.stderr


def test_with_a_peer_dangling_entries_and_replicas_without_shards_are_repaired(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(daemon_factory, tmp_path)
    stored = store(pair.a, 3, "CHECK-PAIR")
    wait_drained(pair.a)
    lost_here = blob_files(pair.a)[0]
    its_replica = blake3.blake3(lost_here.read_bytes()).hexdigest()
    lost_here.unlink()
    other = next(s.name.split(".")[0] for s in shard_files(pair.b) if not s.name.startswith(its_replica))
    for shard in [s for s in shard_files(pair.b) if s.name.startswith(other + ".")]:
        shard.unlink()  # every shard of another replica, at the peer
    assert [f["kind"] for f in check(pair.b)[1]] == ["replica-without-shards"]
    # A stale outbox entry (for a blob the index no longer has), made offline behind one the
    # sender cannot deliver yet (the peer is away): otherwise the sender would skip it at once.
    pair.b.stop()
    stored |= store(pair.a, 1, "CHECK-PAIR-LATE")
    pair.a.stop()
    _stale_outbox_entry(pair.a.data_dir, tmp_path / "run-offline")
    pair.a.start()
    assert sorted(f["kind"] for f in check(pair.a)[1]) == ["dangling", "stale-outbox"]
    code, findings, _ = check(pair.a, "--repair")
    assert next(f for f in findings if f["kind"] == "dangling")["action"].startswith("left: "), "peer away"
    assert next(f for f in findings if f["kind"] == "stale-outbox")["action"] == "deleted"
    pair.b.start()
    wait_drained(pair.a)  # site-a is talking to its peer again
    code, findings, _ = check(pair.a, "--repair")
    assert code == 0, findings
    assert {f["kind"]: f["action"] for f in findings} == {"dangling": "repaired from the peer"}
    code, findings, _ = check(pair.b, "--repair")
    assert code == 0 and findings[0]["action"] == "reported to site-a, which sends it again"
    deadline = time.monotonic() + 60
    while check(pair.b)[0] != 0:  # site-a learns of it at its next probe and sends it again
        assert time.monotonic() < deadline, check(pair.b)
        time.sleep(0.5)
    assert check(pair.a)[0] == 0
    with pair.a.client() as client:
        for uid, data in stored.items():
            assert client.get_instance(uid) == data


def _copy_as_orphan(blob: Path, prefix: str) -> Path:
    name = prefix + blob.name[2:]
    target = blob.parent.parent.parent / name[:2] / name[2:4] / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(blob, target)
    return target


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _offline(data_dir: Path, run: Path) -> InProcess:
    config = config_module.Config(data_dir=str(data_dir)).with_overrides()
    return InProcess(config, run)


def _bump_a_refcount(data_dir: Path, run: Path) -> None:
    archive = _offline(data_dir, run)
    try:
        def op(txn) -> None:  # type: ignore[no-untyped-def]
            key, value = next(iter(txn.cursor(db=archive.index.dbs["blobs"])))
            blob = decode(BlobRecord, value)
            blob.refcount += 1
            txn.put(key, encode(blob), db=archive.index.dbs["blobs"])
        archive.index.write(op)
    finally:
        archive.close()


def _stale_outbox_entry(data_dir: Path, run: Path) -> None:
    config = config_module.Config(data_dir=str(data_dir))
    import tomllib

    raw = tomllib.loads((data_dir.parent / "site-a.toml").read_text())
    config = config_module.from_dict({**raw, "data_dir": str(data_dir)})
    archive = InProcess(config, run)
    try:
        archive.index.write(lambda txn: outbox.append(txn, archive.index, OutboxEntry(
            sop_instance_uid=f"{ROOT}.999.1.1", digest_function=1, digest=bytes(32), size_bytes=10,
            enqueued_at=time.time())))
    finally:
        archive.close()
