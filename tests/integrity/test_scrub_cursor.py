"""The scrub's pass survives a restart where it stopped, and keeps to its byte rate."""

from __future__ import annotations

from pathlib import Path

from pacsvault.daemon import config as config_module
from pacsvault.daemon.index import integrity_books
from pacsvault.daemon.integrity.scrub import LocalScrubber
from pacsvault.daemon.processes.in_process import InProcess
from pacsvault.daemon.tiering.mover import RateLimiter
from tests.conftest import dicom_bytes, identity

ROOT = "1.2.826.0.1.3680043.10.157"


def test_a_pass_resumes_at_its_cursor_after_a_restart_and_keeps_its_rate(tmp_path: Path) -> None:
    config = config_module.Config(data_dir=str(tmp_path / "data")).with_overrides()
    archive = InProcess(config, tmp_path / "run")
    for n in range(10):
        archive.store(dicom_bytes(PatientID="CURSOR", **identity(n, ROOT)))
    scrubber = archive.office.integrity.scrub.scrubber
    assert scrubber.request()
    first = scrubber.run_once(max_blobs=4)
    assert (first.blobs_checked, first.pass_complete) == (4, False)
    cursor = bytes(integrity_books.scrub_state(archive.index).cursor)
    assert cursor
    archive.close()

    reopened = InProcess(config, tmp_path / "run")
    try:
        state = integrity_books.scrub_state(reopened.index)
        assert bytes(state.cursor) == cursor and state.pass_blobs_checked == 4 and not state.idle
        # A scrubber of its own, with a clock that only the rate limiter advances.
        now = [0.0]
        limiter = RateLimiter(1000.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
        office = reopened.office
        paced = LocalScrubber(reopened.index, office.store, office.integrity.repair,
                              _NoFindings(), config.scrub, limiter=limiter)
        step = paced.run_once(max_blobs=100)
        assert (step.blobs_checked, step.pass_complete) == (6, True)
        state = integrity_books.scrub_state(reopened.index)
        assert state.passes_completed == 1 and state.pass_blobs_checked == 10 and state.idle
        assert state.found == 0
        # 1000 bytes a second: the six blobs' stored bytes took (close to) that long, less the first's.
        assert now[0] >= 0.9 * (step.bytes_checked - max_blob(reopened)) / 1000.0
    finally:
        reopened.close()


def max_blob(archive: InProcess) -> int:
    with archive.index.read() as txn:
        from pacsvault.daemon.index.records import BlobRecord, decode

        return max(decode(BlobRecord, v).stored_bytes for _, v in txn.cursor(db=archive.index.dbs["blobs"]))


class _NoFindings:
    def found(self, *args: object) -> None:
        raise AssertionError(f"nothing is damaged: {args}")
