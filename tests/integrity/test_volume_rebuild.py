"""pacsvault tiers rebuild VOLUME (issue 15, defect 7): a wiped volume rebuilt from the peer at
once, with progress and an ETA, instead of one read at a time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest

from pacsvault.client import corpus as corpus_module
from tests.conftest import run_cli
from tests.integration.test_replication_pair import status, wait_drained
from tests.integrity.pairs import make_pair

pytestmark = pytest.mark.slow
TIERS = ('[[tiers]]\nname = "hot"\nvolumes = ["tiers/hot-1", "tiers/hot-2"]\nreserve_bytes = 0\n'
         '[[tiers]]\nname = "capacity"\nvolumes = ["tiers/capacity"]\nreserve_bytes = 0\n')


def test_a_wiped_volume_is_rebuilt_from_the_peer_with_progress(daemon_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               small_corpus: list[corpus_module.GeneratedInstance]) -> None:
    pair = make_pair(daemon_factory, tmp_path, extra_a=TIERS)
    with pair.a.client() as client:
        for item in small_corpus:
            assert client.store_file(item.path).ok
    wait_drained(pair.a)
    lost = pair.a.data_dir / "tiers/hot-1"
    on_lost = len([p for p in lost.glob("blobs/**/*") if p.is_file()])
    assert on_lost > 0, "the test needs blobs on the volume it loses"
    pair.a.stop()
    shutil.rmtree(lost)  # the disk is gone: a new, empty one is mounted in its place
    lost.mkdir()
    pair.a.start()
    victim = next(i for i in small_corpus if _on(pair, i.sop_instance_uid) == "hot")
    with pair.a.client() as client:  # reads of what it held are refused meanwhile, or repaired one at a time
        try:
            client.get_instance(victim.sop_instance_uid)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
    repairs_before = status(pair.a)["repairs"]
    rebuilt = run_cli(pair.a.target, "tiers", "rebuild", str(lost), "--wait")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"volume {lost}: done" in rebuilt.stdout
    volumes = [json.loads(line) for line in run_cli(pair.a.target, "tiers", "--json").stdout.splitlines()]
    assert next(v for v in volumes if v["path"] == str(lost))["state"] in ("drained", "refused")
    listing = run_cli(pair.a.target, "tiers").stdout
    assert f"rebuild of {lost}: done" in listing and " blobs (" in listing and "/s" in listing
    assert status(pair.a)["repairs"] - repairs_before >= on_lost - 1
    with pair.a.client() as client:
        for item in small_corpus:
            assert client.get_instance(item.sop_instance_uid) == item.path.read_bytes()
    assert run_cli(pair.a.target, "check").returncode == 0


def _on(pair, sop_uid: str) -> str:  # type: ignore[no-untyped-def]
    with pair.a.client() as client:
        return next(m.instance.tier for m in client.find("instance") if m.instance.sop_instance_uid == sop_uid)
