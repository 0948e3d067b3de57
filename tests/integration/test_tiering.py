"""Tiering on real filesystems, driving the archive and the mover directly:
overflow, demotion, promotion, pins, drains, and SIGKILL at every step of a move."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pacsvault.client import corpus as corpus_module
from pacsvault.daemon import config as config_module
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.records import StudyRecord, decode
from pacsvault.daemon.storage.blob_access import read_all
from pacsvault.daemon.tiering.mover import STEPS
from pacsvault.daemon.processes.in_process import InProcess

pytestmark = pytest.mark.slow


def make_config(data_dir: Path, hot: Path, capacity: list[Path], **tiering: object) -> config_module.Config:
    return config_module.from_dict({
        "data_dir": str(data_dir),
        "tiering": {"mover_max_bytes_per_s": 1 << 30, **tiering},
        "tiers": [
            {"name": "hot", "volumes": [str(hot)], "volume_class": "nvme", "high_watermark": 0.8,
             "low_watermark": 0.5, "reserve_bytes": 0},
            {"name": "capacity", "volumes": [str(p) for p in capacity], "volume_class": "hdd",
             "high_watermark": 0.95, "low_watermark": 0.9, "reserve_bytes": 0},
        ],
    })


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("tiering-corpus"), patients=6, studies_per_patient=2,
                                  series_per_study=2, instances_per_series=4, seed=5)


def store_all(archive: InProcess, corpus: list[corpus_module.GeneratedInstance]) -> dict[str, bytes]:
    stored = {}
    for item in corpus:
        data = item.path.read_bytes()
        archive.store(data)
        stored[item.sop_instance_uid] = data
    return stored


def check_consistent(archive: InProcess, expected: dict[str, bytes]) -> dict[str, int]:
    """Every instance reads back byte-identical from exactly one copy, and the books add up."""
    per_tier: dict[str, int] = {}
    for sop_uid, data in expected.items():
        _, blob = archive.catalog.instance(sop_uid)
        assert read_all(archive.worker.retrieval.open_blob(blob)) == data
        digest = Digest(DigestFunction(blob.digest_function), blob.digest, blob.size_bytes)
        holders = [v.volume_id for v in archive.office.store.volumes if v.local.contains(digest)]
        assert holders == [blob.location.volume_id], f"{sop_uid}: copies on {holders}"
        per_tier[blob.location.tier] = per_tier.get(blob.location.tier, 0) + 1
    with archive.index.read() as txn:
        for _, value in txn.cursor(db=archive.index.dbs["studies"]):
            study = decode(StudyRecord, value)
            assert sum(study.tier_instances.values()) == study.instance_count
    for record in placement.volumes(archive.index):
        with archive.index.read() as txn:
            listed = sum(1 for _ in placement.volume_blob_keys(txn, archive.index, record.volume_id))
        assert listed == record.blob_count
    assert placement.move_intents(archive.index) == []
    return per_tier


def hot_fill(archive: InProcess) -> float:
    return archive.office.store.tiers[0].volumes[0].usage().fill


def test_hot_tier_overflows_to_capacity_then_the_mover_frees_it(
    tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    hot = tmpfs("hot", "3m")
    archive = InProcess(make_config(tmp_path / "data", hot, [tmp_path / "capacity"]), tmp_path / "run")
    try:
        expected = store_all(archive, corpus)  # no error although the hot tier fills up
        before = check_consistent(archive, expected)
        assert before.get("capacity", 0) > 0, "the hot tier overflowed onto the capacity tier"
        assert hot_fill(archive) > 0.5
        planned = archive.tiering.plan(1000)
        assert planned and all(m.reason == "watermark" for m in planned)
        assert check_consistent(archive, expected) == before, "plan is a dry run"
        archive.mover.run_once(max_bytes=1 << 40)
        assert hot_fill(archive) <= 0.5 + 0.05
        after = check_consistent(archive, expected)
        assert after["capacity"] > before["capacity"]
    finally:
        archive.close()


def everything_demoted(hot: Path, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]
                       ) -> tuple[InProcess, list[float], dict[str, bytes]]:
    """An archive whose every study went down to the capacity tier by a one-day age rule: the archive,
    its clock (two days on, settable) and what was stored."""
    now = [time.time()]
    archive = InProcess(make_config(tmp_path / "data", hot, [tmp_path / "capacity"], demote_after_days=1),
                        tmp_path / "run", clock=lambda: now[0])
    try:
        expected = store_all(archive, corpus)
        now[0] += 2 * 86400
        archive.mover.run_once(max_bytes=1 << 40)
        assert set(check_consistent(archive, expected)) == {"capacity"}
    except BaseException:
        archive.close()
        raise
    return archive, now, expected


def test_reading_a_demoted_study_promotes_it_and_pins_keep_it(
    tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    archive, now, expected = everything_demoted(tmpfs("hot", "16m"), tmp_path, corpus)
    mover = archive.mover
    try:
        study_uid = corpus[0].study_instance_uid
        archive.worker.retrieval.study_instances(study_uid)  # a viewer opens the study
        archive.worker.reads.flush()
        mover.run_once(max_bytes=1 << 40)
        assert {b.location.tier for _, b in archive.catalog.study_instances(study_uid)} == {"hot"}
        # Pinned, the age rule passes it by; unpinned, it goes down again once cold.
        archive.worker.requests.pin(study_uid, "29991231")
        now[0] += 3 * 86400
        mover.run_once(max_bytes=1 << 40)
        assert {b.location.tier for _, b in archive.catalog.study_instances(study_uid)} == {"hot"}
        archive.worker.requests.pin(study_uid, "")
        mover.run_once(max_bytes=1 << 40)
        assert {b.location.tier for _, b in archive.catalog.study_instances(study_uid)} == {"capacity"}
        # Prefetch brings a patient's priors back before the exam, and they stay.
        patient = corpus[0].patient_id
        studies, size = archive.worker.requests.prefetch(patient, "")
        assert studies == len({i.study_instance_uid for i in corpus if i.patient_id == patient}) and size > 0
        archive.worker.reads.flush()
        mover.run_once(max_bytes=1 << 40)
        for item in corpus:
            tier = archive.catalog.instance(item.sop_instance_uid)[1].location.tier
            assert tier == ("hot" if item.patient_id == patient else "capacity")
        check_consistent(archive, expected)
    finally:
        archive.close()


def test_a_study_comes_up_whole_or_not_at_all_and_colder_studies_make_room(
    tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    archive, now, expected = everything_demoted(tmpfs("hot", "4m"), tmp_path, corpus)
    mover = archive.mover
    try:
        sizes: dict[str, int] = {}
        for item in corpus:
            stored = archive.catalog.instance(item.sop_instance_uid)[1].stored_bytes
            sizes[item.study_instance_uid] = sizes.get(item.study_instance_uid, 0) + stored
        ceiling = archive.office.store.tiers[0].volumes[0].ceiling()
        too_large = [uid for uid, size in sizes.items() if size > ceiling]
        fitting = sorted((uid for uid, size in sizes.items() if size <= ceiling), key=sizes.__getitem__)
        assert too_large and sum(sizes[uid] for uid in fitting) > ceiling, "the corpus no longer tests this"

        def open_study(study_uid: str) -> None:  # a viewer opens it a second after the last one
            now[0] += 1
            archive.worker.retrieval.study_instances(study_uid)
            archive.worker.reads.flush()

        def tiers_of_studies() -> dict[str, set[str]]:
            return {uid: {b.location.tier for _, b in archive.catalog.study_instances(uid)} for uid in sizes}

        for study_uid in too_large + fitting:  # the largest fitting study is opened last
            open_study(study_uid)
        for _ in range(3):
            mover.run_once(max_bytes=1 << 40)
        placed = tiers_of_studies()
        assert all(len(tiers) == 1 for tiers in placed.values()), f"a study was split: {placed}"
        assert placed[fitting[-1]] == {"hot"} and placed[fitting[-2]] == {"hot"}, "the last opened come up first"
        assert all(placed[uid] == {"capacity"} for uid in too_large), "more than the tier holds stays down"
        assert hot_fill(archive) <= 0.8
        assert set(placement.promotions(archive.index)).isdisjoint(too_large), "its request is dropped"
        moved = mover.stats.bytes_moved
        mover.run_once(max_bytes=1 << 40)
        assert mover.stats.bytes_moved == moved, "promotion and demotion do not fight"
        # A study still down, opened now, comes up: studies opened before it leave to make room.
        waiting = next(uid for uid in reversed(fitting) if placed[uid] == {"capacity"})
        open_study(waiting)
        mover.run_once(max_bytes=1 << 40)
        after = tiers_of_studies()
        assert after[waiting] == {"hot"}
        assert all(len(tiers) == 1 for tiers in after.values()), f"a study was split: {after}"
        left = [uid for uid in fitting if placed[uid] == {"hot"} and after[uid] == {"capacity"}]
        assert left, "something colder made room"
        assert hot_fill(archive) <= 0.8
        check_consistent(archive, expected)
    finally:
        archive.close()


def test_drain_moves_everything_off_a_volume(tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]) -> None:
    archive = InProcess(make_config(tmp_path / "data", tmp_path / "hot", [tmp_path / "cap1"]), tmp_path / "run")
    try:
        expected = store_all(archive, corpus)
        hot = archive.office.store.tiers[0].volumes[0]
        with pytest.raises(Exception, match="no other volume"):
            archive.tiering.drain(str(tmp_path / "cap1"))  # the only other... both are needed
            archive.tiering.drain(str(tmp_path / "hot"))
        archive.tiering.add_volume("hot", str(_mkdir(tmp_path / "hot2")))
        archive.tiering.drain(hot.path)
        assert not hot.accepts(1)
        while archive.mover.run_once(max_bytes=200_000) and _blobs_on(archive, hot.volume_id):
            pass
        assert _blobs_on(archive, hot.volume_id) == 0
        record = next(r for r in placement.volumes(archive.index) if r.volume_id == hot.volume_id)
        assert record.state == "drained"
        per_tier = check_consistent(archive, expected)
        assert per_tier == {"hot": len(expected)}, "drained to the other hot volume"
    finally:
        archive.close()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _blobs_on(archive: InProcess, volume_id: str) -> int:
    return next(r.blob_count for r in placement.volumes(archive.index) if r.volume_id == volume_id)


KILLER = """
import os, signal, sys, json
from pathlib import Path
from pacsvault.daemon import config as config_module
from pacsvault.daemon.processes import back_office
raw, step, run = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
office = back_office.build(config_module.from_dict(raw), run)
def on_step(name, digest, seen=[0]):
    if name == step:
        seen[0] += 1
        if seen[0] == 3:  # a few moves in, so finished moves and an interrupted one coexist
            os.kill(os.getpid(), signal.SIGKILL)
office.tiering.mover.on_step = on_step
office.tiering.mover.run_once(max_bytes=1 << 40)
print("finished without being killed")
"""


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_every_step_of_a_move_loses_nothing(
    step: str, tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    hot = tmpfs("hot", "3m")
    config = make_config(tmp_path / "data", hot, [tmp_path / "capacity"])
    archive = InProcess(config, tmp_path / "run")
    expected = store_all(archive, corpus)
    archive.close()
    # The operator lowers the hot tier's watermarks: the mover must free it. (Only hot's: the
    # capacity tier lives on the machine's own disk, whose fill this test does not control.)
    hot_tier = config.tiers[0]
    raw = {"data_dir": config.data_dir, "tiering": {"mover_max_bytes_per_s": 1 << 30},
           "tiers": [{"name": hot_tier.name, "volumes": list(hot_tier.volumes),
                      "high_watermark": hot_tier.high_watermark / 2, "low_watermark": hot_tier.low_watermark / 2,
                      "reserve_bytes": 0},
                     *({"name": t.name, "volumes": list(t.volumes), "high_watermark": t.high_watermark,
                        "low_watermark": t.low_watermark, "reserve_bytes": 0} for t in config.tiers[1:])]}
    result = subprocess.run([sys.executable, "-c", KILLER, json.dumps(raw), step, str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    archive = InProcess(config_module.from_dict(raw), tmp_path / "run")
    try:
        interrupted = placement.move_intents(archive.index)
        assert bool(interrupted) == (step != "done")
        # Even before recovery, every instance reads back (the index points at a good copy).
        for sop_uid, data in expected.items():
            assert read_all(archive.worker.retrieval.open_blob(archive.catalog.instance(sop_uid)[1])) == data
        archive.mover.run_once(max_bytes=1 << 40)
        check_consistent(archive, expected)
    finally:
        archive.close()


def test_a_volume_whose_disk_is_not_mounted_is_refused(
    tmpfs, tmp_path: Path, corpus: list[corpus_module.GeneratedInstance]  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import unmount

    cap = tmpfs("cap", "64m")
    config = make_config(tmp_path / "data", tmp_path / "hot", [cap])
    archive = InProcess(config, tmp_path / "run")
    expected = store_all(archive, corpus[:8])
    archive.tiering.drain(str(tmp_path / "hot"))
    archive.mover.run_once(max_bytes=1 << 40)  # everything now lives on the tmpfs
    archive.close()
    unmount(cap)  # the disk is gone; its mount point is an empty directory on the root disk
    archive = InProcess(config, tmp_path / "run")
    try:
        status = {v.path: v for v in archive.tiering.status()}
        assert status[str(cap)].state == "refused"
        assert "marker is missing" in status[str(cap)].reason
        assert list(cap.iterdir()) == [], "nothing was written into the bare mount point"
        from pacsvault.daemon.errors import Unavailable

        with pytest.raises(Unavailable, match="not mounted or refused"):
            archive.worker.retrieval.open_blob(archive.catalog.instance(next(iter(expected)))[1])
        assert archive.office.report.health().state == "critical"
    finally:
        archive.close()
