"""AsyncPacsvaultClient against a real daemon: the integrator's day, concurrently, on grpc.aio."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydicom
import pytest

from pacsvault.client import AsyncPacsvaultClient, DeadlineExceeded, NotFound, SavedInstance, Unauthenticated
from pacsvault.client import corpus as corpus_module
from tests.client.cli_support import ROOT, numbered_series, paused, sop_of
from tests.conftest import Daemon


def test_store_find_retrieve_and_save_on_asyncio(daemon: Daemon, small_corpus: list[corpus_module.GeneratedInstance],
                                                 tmp_path: Path) -> None:
    async def day() -> None:
        async with AsyncPacsvaultClient(daemon.target) as archive:
            # Stores in parallel on one channel.
            results = await asyncio.gather(*(archive.store_file(i.path) for i in small_corpus))
            assert {r.status for r in results} == {"stored"}
            assert (await archive.health()).index.instances == len(small_corpus)
            assert await archive.serving_status() == "SERVING"
            first = small_corpus[0]
            studies = [m.study.study_instance_uid async for m in archive.patient_studies(first.patient_id)]
            assert sorted(studies) == sorted({i.study_instance_uid for i in small_corpus
                                              if i.patient_id == first.patient_id})
            found = [m async for m in archive.find("study", patient_id=first.patient_id, limit=1)]
            assert len(found) == 1
            everything = await asyncio.gather(*(archive.get_instance(i.sop_instance_uid) for i in small_corpus))
            assert everything == [i.path.read_bytes() for i in small_corpus]
            dataset = await archive.get_instance(first.sop_instance_uid, as_dataset=True)
            assert isinstance(dataset, pydicom.Dataset) and dataset.SOPInstanceUID == first.sop_instance_uid
            members = {i.sop_instance_uid: i.path.read_bytes() for i in small_corpus
                       if i.study_instance_uid == first.study_instance_uid}
            streamed = {a.sop_instance_uid: d async for a, d in archive.iter_study(first.study_instance_uid)}
            assert streamed == members
            parsed = [d async for _, d in archive.iter_series(first.series_instance_uid, as_dataset=True)]
            assert {d.SeriesInstanceUID for d in parsed} == {first.series_instance_uid}
            seen: list[SavedInstance] = []
            saved = await archive.save_study(first.study_instance_uid, tmp_path / "study", progress=seen.append)
            assert saved == seen and {s.path.read_bytes() for s in saved} == set(members.values())
            again = await archive.save_study(first.study_instance_uid, tmp_path / "study")
            assert all(s.already_present for s in again)
            items = await archive.study_metadata_items(first.study_instance_uid)
            assert {i.sop_instance_uid for i in items} == set(members) and {i.tier for i in items} == {"hot"}
            with pytest.raises(NotFound):
                await archive.get_instance("1.2.3.404")
            with pytest.raises(NotFound):
                await archive.save_series("1.2.3.404", tmp_path / "never")
            assert not (tmp_path / "never").exists()
            grant = await archive.create_share(study_instance_uid=first.study_instance_uid, ttl_seconds=60)
            assert [s.share_id for s in await archive.list_shares()] == [grant.share.share_id]
        async with AsyncPacsvaultClient(daemon.target, token=grant.token) as guest:
            assert await guest.get_instance(first.sop_instance_uid) == first.path.read_bytes()
            with pytest.raises(NotFound):
                await guest.get_instance(small_corpus[-1].sop_instance_uid)
        async with AsyncPacsvaultClient(daemon.target, token="pv_" + "B" * 43) as forger:
            with pytest.raises(Unauthenticated):
                await forger.health()

    asyncio.run(day())


def test_the_async_stream_deadline_is_per_message(daemon: Daemon) -> None:
    instances = numbered_series(11, 1, 8)
    with daemon.client() as client:
        assert all(client.store(d).status == "stored" for _, d in instances)

    async def read_slowly() -> list[str]:
        async with AsyncPacsvaultClient(daemon.target, timeout=0.3) as archive:
            got = []
            async for attributes, _ in archive.iter_series(f"{ROOT}.11.1"):
                got.append(attributes.sop_instance_uid)
                await asyncio.sleep(0.1)  # 0.8 s in all, longer than the timeout
            return got

    assert asyncio.run(read_slowly()) == [sop_of(d) for _, d in instances]

    async def stalled() -> None:
        async with AsyncPacsvaultClient(daemon.target, timeout=1.0) as archive:
            with pytest.raises(DeadlineExceeded, match="no data from the appliance for 1 s"):
                await archive.get_instance(sop_of(instances[0][1]))

    with paused(daemon):
        asyncio.run(asyncio.wait_for(stalled(), 20))
