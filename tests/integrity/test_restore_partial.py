"""A restore from the peer goes past what the peer cannot give back, and names it (issue 15, defect 2)."""

from __future__ import annotations

import json
import shutil

import pytest

from pacsvault.client import corpus as corpus_module
from tests.conftest import run_cli
from tests.integration.test_replication_pair import Pair, blob_files, pair, shard_files, store, wait_drained  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("restore-corpus"), patients=2, studies_per_patient=2,
                                  series_per_study=1, instances_per_series=3, seed=151)


def test_restore_skips_an_unrecoverable_blob_lists_it_and_restores_the_rest(pair: Pair, corpus: list) -> None:  # noqa: F811
    stored = store(pair.a, corpus)
    wait_drained(pair.a)
    victim = corpus[4]
    # Three of the six shards of the victim's replica rot at the peer: past what 4 + 2 survives.
    by_blob: dict[str, list] = {}
    for shard in shard_files(pair.b):
        by_blob.setdefault(shard.name.rsplit(".", 1)[0], []).append(shard)
    victim_shards = _shards_of(pair, by_blob, victim.path.read_bytes())
    for shard in victim_shards[:3]:
        raw = bytearray(shard.read_bytes())
        raw[-20] ^= 0xFF
        shard.write_bytes(bytes(raw))
    pair.a.stop()
    shutil.rmtree(pair.a.data_dir)
    pair.a.start()
    result = run_cli(pair.a.target, "restore", "--from-peer", "--json")
    assert result.returncode == 7, result.stdout + result.stderr  # partial success
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    last = [line for line in lines if "total" in line][-1]
    assert (last["restored"], last["failed"]) == (len(stored) - 1, 1)
    failures = [line for line in lines if "failed_instance" in line]
    assert [f["failed_instance"] for f in failures] == [victim.sop_instance_uid]
    assert failures[0]["study_instance_uid"] == victim.study_instance_uid and "DATA_LOSS" in failures[0]["reason"]
    assert victim.sop_instance_uid in result.stderr
    with pair.a.client() as client:
        for uid, data in stored.items():
            if uid != victim.sop_instance_uid:
                assert client.get_instance(uid) == data
    again = run_cli(pair.a.target, "restore", "--from-peer", "--json")  # resumable: only the lost one is tried
    last = [json.loads(line) for line in again.stdout.splitlines() if '"total"' in line][-1]
    assert (last["already_present"], last["failed"]) == (len(stored) - 1, 1)


def _shards_of(pair: Pair, by_blob: dict[str, list], data: bytes) -> list:  # noqa: F811
    """The shard files of the replica of ``data``: the replica's name is the plain BLAKE3 of its
    stored (sealed) form, which only the primary's blob file gives."""
    import blake3

    for blob in blob_files(pair.a):
        name = blake3.blake3(blob.read_bytes()).hexdigest()
        if name in by_blob and _holds(pair, blob, data):
            return sorted(by_blob[name])
    raise AssertionError("the victim's shards were not found")


def _holds(pair: Pair, blob, data: bytes) -> bool:  # noqa: F811, ANN001
    from pacsvault.daemon import config as config_module
    from pacsvault.daemon.crypto.appliance_keys import open_keys
    from pacsvault.daemon.digest import address_of
    from pacsvault.daemon.storage.blob_sealer import BlobSealer

    keys = open_keys(config_module.Config(data_dir=str(pair.a.data_dir)))
    return blob.name == address_of(data, BlobSealer(keys).address_key).hex  # type: ignore[arg-type]
