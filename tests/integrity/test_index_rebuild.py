"""Index rebuild (issue 15, item 3): a lost, damaged or cut-short index is refused at start with the
command that rebuilds it; `pacsvaultd --rebuild-index` gives back the same archive from the blobs."""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from pacsvault.client import corpus as corpus_module
from tests.conftest import Daemon, dicom_bytes, identity, run_cli
from tests.integration.test_replication_pair import blob_files, status, wait_drained
from tests.integrity.pairs import make_pair
from tests.integrity.test_lifecycle import ROOT as LIFECYCLE_ROOT
from tests.integrity.test_lifecycle import store as lifecycle_store
from tests.integrity.test_lifecycle import study as lifecycle_study

pytestmark = pytest.mark.slow
ROOT = "1.2.826.0.1.3680043.10.159"


def rebuild(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pacsvault.daemon", "--rebuild-index", "--data-dir", str(daemon.data_dir)]
    if daemon.config is not None:
        argv += ["--config", str(daemon.config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def everything(daemon: Daemon) -> dict[str, list[dict]]:
    """Every find answer at every level, as plain data, in a stable order."""
    with daemon.client() as client:
        return {level: sorted((MessageToDict(m) for m in client.find(level)), key=repr)  # type: ignore[arg-type]
                for level in ("patient", "study", "series", "instance")}


def refused_start(daemon: Daemon) -> str:
    with pytest.raises(RuntimeError) as refused:
        daemon.start()
    return str(refused.value)


def test_a_lost_index_is_refused_at_start_and_rebuilt_from_the_blobs(
        daemon: Daemon, small_corpus: list[corpus_module.GeneratedInstance]) -> None:
    with daemon.client() as client:
        for item in small_corpus:
            assert client.store_file(item.path).ok
    before = everything(daemon)
    daemon.stop()
    shutil.rmtree(daemon.data_dir / "index")
    message = refused_start(daemon)
    assert "the index" in message and "is empty, but the volumes" in message and "pacsvaultd --rebuild-index" in message
    done = rebuild(daemon)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"index rebuilt: {len(small_corpus)} instances from {len(small_corpus)} blobs" in done.stdout
    assert "share grants" in done.stdout and "legal holds" in done.stdout, "it names what no blob carries"
    daemon.start()
    assert everything(daemon) == before
    with daemon.client() as client:
        for item in small_corpus:
            assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()
        assert client.health().index.instances == len(small_corpus)
    running = rebuild(daemon)  # while a daemon runs on the data dir, a rebuild is refused
    assert running.returncode == 2 and "in use by another pacsvaultd" in running.stderr
    assert run_cli(daemon.target, "check").returncode == 0


def test_a_rebuild_names_the_holds_and_deletions_the_audit_trail_recorded(daemon: Daemon) -> None:
    studies = {n: lifecycle_study(n, f"TRAIL-{n}") for n in range(1, 7)}
    lifecycle_store(daemon, *studies.values())
    series_of = {n: f"{LIFECYCLE_ROOT}.{n}.1" for n in studies}

    def cli(*args: str) -> None:
        done = run_cli(daemon.target, *args)
        assert done.returncode == 0, done.stderr

    cli("hold", "add", f"{LIFECYCLE_ROOT}.1", "--reason", "litigation 2026-17 (o'brien)")
    cli("hold", "add", f"{LIFECYCLE_ROOT}.5", "--reason", "audit")
    cli("hold", "remove", f"{LIFECYCLE_ROOT}.5", "--reason", "audit closed")
    cli("delete", f"{LIFECYCLE_ROOT}.2", "--reason", "wrong patient", "--yes")
    cli("delete", series_of[3], "--level", "series", "--reason", "test series", "--yes")
    cli("undelete", series_of[3], "--level", "series")  # undone: stays live
    cli("delete", series_of[4], "--level", "series", "--reason", "rejected: quality", "--yes")
    cli("delete", f"{LIFECYCLE_ROOT}.6", "--reason", "duplicate", "--yes")
    lifecycle_store(daemon, studies[6])  # the modality sent it again
    daemon.stop()
    shutil.rmtree(daemon.data_dir / "index")
    done = rebuild(daemon)
    assert done.returncode == 0, done.stdout + done.stderr
    commands = [line.strip().split("    # ") for line in done.stdout.splitlines() if line.startswith("  pacsvault ")]
    assert [c for c, _ in commands] == [
        f"pacsvault hold add {LIFECYCLE_ROOT}.1 --reason 'litigation 2026-17 (o'\"'\"'brien)'",
        f"pacsvault delete {LIFECYCLE_ROOT}.2 --level study --reason 'wrong patient' --yes",
        f"pacsvault delete {series_of[4]} --level series --reason 'rejected: quality' --yes",
        f"pacsvault delete {LIFECYCLE_ROOT}.6 --level study --reason duplicate --yes",
    ], done.stdout
    notes = dict(commands)
    assert all("by local:loopback" in note for note in notes.values())
    assert "STORED AGAIN" in notes[f"pacsvault delete {LIFECYCLE_ROOT}.6 --level study --reason duplicate --yes"]
    assert sum("STORED AGAIN" in note for note in notes.values()) == 1
    # The commands are what an operator runs, as printed.
    daemon.start()
    for command, _ in commands[:3]:
        cli(*shlex.split(command)[1:])
    with daemon.client() as client:
        assert {h.study_instance_uid for h in client.legal_holds()} == {f"{LIFECYCLE_ROOT}.1"}
        live = {m.study.study_instance_uid for m in client.find("study")}
    assert f"{LIFECYCLE_ROOT}.2" not in live and f"{LIFECYCLE_ROOT}.6" in live
    refused = run_cli(daemon.target, "delete", f"{LIFECYCLE_ROOT}.1", "--reason", "no", "--yes")
    assert refused.returncode == 6 and "legal hold" in refused.stderr


def test_a_damaged_page_is_refused_with_the_command_and_rebuilt(daemon: Daemon) -> None:
    data = {n: dicom_bytes(PatientID="PAGE", **identity(n, ROOT)) for n in range(20)}
    with daemon.client() as client:
        for item in data.values():
            assert client.store(item).ok
    daemon.stop()
    index = daemon.data_dir / "index" / "data.mdb"
    raw = bytearray(index.read_bytes())
    page = root_page(raw, b"instances") * PAGE
    raw[page : page + PAGE] = bytes(PAGE)  # the instances table's root page, zeroed
    index.write_bytes(bytes(raw))
    message = refused_start(daemon)
    assert "is damaged" in message and "pacsvaultd --rebuild-index" in message
    assert rebuild(daemon).returncode == 0
    daemon.start()
    with daemon.client() as client:
        for n, item in data.items():
            assert client.get_instance(f"{ROOT}.{n}.1.1") == item


@pytest.mark.parametrize("damage", ["cut-in-half", "meta-pages"])
def test_a_cut_short_or_unreadable_index_file_is_refused_without_a_crash(daemon: Daemon, damage: str) -> None:
    with daemon.client() as client:
        for n in range(30, 60):
            assert client.store(dicom_bytes(PatientID="CUT", **identity(n, ROOT))).ok
    daemon.stop()
    index = daemon.data_dir / "index" / "data.mdb"
    if damage == "cut-in-half":
        os.truncate(index, index.stat().st_size // 2)
    else:
        raw = bytearray(index.read_bytes())
        raw[0:8192] = os.urandom(8192)
        index.write_bytes(bytes(raw))
    message = refused_start(daemon)
    assert "pacsvaultd --rebuild-index" in message, message
    assert "SIGBUS" not in message and "Traceback" not in message, message
    assert rebuild(daemon).returncode == 0
    daemon.start()
    with daemon.client() as client:
        assert client.health().index.instances == 30


def test_a_rebuild_reconciles_with_the_peer(daemon_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            small_corpus: list[corpus_module.GeneratedInstance]) -> None:
    pair = make_pair(daemon_factory, tmp_path)
    with pair.a.client() as client:
        for item in small_corpus[:10]:
            assert client.store_file(item.path).ok
    wait_drained(pair.a)
    pair.a.stop()
    shutil.rmtree(pair.a.data_dir / "index")
    done = rebuild(pair.a)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reconciled with site-b: 10 instances it holds, 0 queued to send to it" in done.stdout
    pair.a.start()
    assert status(pair.a)["pending_entries"] == 0, "nothing is sent again"
    blob_files(pair.a)[0].unlink()  # and repairs find the peer's copies under their names
    with pair.a.client() as client:
        for item in small_corpus[:10]:
            assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()


PAGE = 4096


def root_page(raw: bytearray, name: bytes) -> int:
    """The root page of a named LMDB database, read from the file (LMDB's documented layout): the
    newer meta page names the main database's root, whose leaf holds each named database's record."""
    metas = [(struct.unpack_from("<Q", raw, at + 144)[0], at) for at in (0, PAGE)]
    meta = max(metas)[1]
    main_root = struct.unpack_from("<Q", raw, meta + 128)[0]
    base = main_root * PAGE
    lower = struct.unpack_from("<H", raw, base + 12)[0]
    for i in range((lower - 16) // 2):
        node = base + struct.unpack_from("<H", raw, base + 16 + 2 * i)[0]
        key_size = struct.unpack_from("<H", raw, node + 6)[0]
        if raw[node + 8 : node + 8 + key_size] == name:
            return int(struct.unpack_from("<Q", raw, node + 8 + key_size + 40)[0])
    raise AssertionError(f"no database {name!r} in the main database's root leaf")
