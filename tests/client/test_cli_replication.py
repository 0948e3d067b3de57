"""The CLI's long replication jobs on a real pair: reseed and restore follow their progress."""

from __future__ import annotations

import shutil

import pytest

from tests.client.cli_support import run_cli_on_terminal
from tests.integration.test_replication_pair import Pair, corpus, pair, shard_files, store, wait_drained  # noqa: F401

pytestmark = pytest.mark.slow


def test_reseed_and_restore_show_progress_on_a_terminal(
        pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]  # noqa: F811
    stored = store(pair.a, corpus[:8])
    wait_drained(pair.a)
    pair.b.stop()
    shutil.rmtree(pair.b.data_dir)  # a new, empty peer
    pair.b.start()
    reseed = run_cli_on_terminal(pair.a.target, "replication", "reseed")
    assert reseed.returncode == 0, reseed.terminal
    assert reseed.stdout == f"{len(stored)} instances queued for the peer\n"
    assert "reseed" in reseed.terminal and f"{len(stored)}/{len(stored)}" in reseed.terminal, reseed.terminal
    assert "the peer holds everything again" in reseed.terminal
    assert len(shard_files(pair.b)) == 6 * len(stored)
    pair.a.stop()
    shutil.rmtree(pair.a.data_dir)  # the site is lost
    pair.a.start()
    restore = run_cli_on_terminal(pair.a.target, "restore", "--from-peer")
    assert restore.returncode == 0, restore.terminal
    assert "restore" in restore.terminal and f"{len(stored)}/{len(stored)}" in restore.terminal, restore.terminal
    assert f"restored {len(stored)} instances" in restore.terminal and restore.stdout == ""
    with pair.a.client() as client:
        assert all(client.get_instance(uid) == data for uid, data in stored.items())
