"""The ATNA exporter's passes over a real trail: order, the cursor, resuming, never past the durable end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pacsvault.daemon.audit.exporter import AtnaExporter, Cursor
from pacsvault.daemon.audit.trail import AuditTrail, load_or_create_keys
from tests.atna_support import BOM, validate


class FakeRepository:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.down = False

    def send(self, messages: Sequence[bytes]) -> None:
        if self.down:
            raise ConnectionRefusedError("repository away")
        self.received.extend(messages)

    def close(self) -> None:
        pass

    def seqs(self) -> list[int]:
        out = []
        for raw in self.received:
            root = validate(raw.split(BOM.encode(), 1)[1])
            text = root.find("EventIdentification/EventOutcomeDescription").text
            out.append(int(text.rsplit("audit record ", 1)[1].rstrip(")")))
        return out


@pytest.fixture
def trail(tmp_path: Path):  # type: ignore[no-untyped-def]
    key, signer = load_or_create_keys(tmp_path / "keys")
    trail = AuditTrail(tmp_path / "trail.jsonl", key, signer)
    yield trail
    trail.close()


def calls(trail: AuditTrail, n: int, action: str = "GetStudy") -> None:
    for i in range(n):
        trail.append({"action": action, "phase": "begin", "study_instance_uid": f"1.2.{i}"})
        trail.append({"action": action, "phase": "end", "outcome": "OK", "study_instance_uid": f"1.2.{i}"})


def exporter(trail: AuditTrail, repo: FakeRepository, **kwargs: object) -> AtnaExporter:
    return AtnaExporter("arr", trail.path, repo, "site-a", committed=lambda: trail.last_seq,  # type: ignore[arg-type]
                        hostname="h", **kwargs)  # type: ignore[arg-type]


def test_end_records_are_sent_in_order_and_the_cursor_moves(trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(trail, 3)
    export = exporter(trail, repo)
    assert export.run_once() == 6
    assert repo.seqs() == [2, 4, 6]
    assert export.load_cursor() == Cursor(6, trail.path.stat().st_size)
    assert export.run_once() == 0
    calls(trail, 1)
    assert export.run_once() == 2 and repo.seqs() == [2, 4, 6, 8]


def test_a_failed_send_keeps_the_cursor_and_resends_later(trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(trail, 2)
    export = exporter(trail, repo)
    repo.down = True
    with pytest.raises(ConnectionRefusedError):
        export.run_once()
    assert export.load_cursor() == Cursor()
    repo.down = False
    calls(trail, 1)
    export.run_once()
    assert repo.seqs() == [2, 4, 6]


def test_batches_are_bounded_and_a_new_exporter_resumes_from_the_cursor(trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(trail, 5)
    assert exporter(trail, repo, max_records=4).run_once() == 4
    assert repo.seqs() == [2, 4]
    # As after a daemon restart: a fresh exporter, the same cursor file.
    while exporter(trail, repo, max_records=4).run_once():
        pass
    assert repo.seqs() == [2, 4, 6, 8, 10]


def test_nothing_past_the_durable_end_nor_a_half_written_line(trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(trail, 1)
    durable = trail.last_seq
    with open(trail.path, "ab") as out:  # a line the writer has not finished
        out.write(b'{"action":"GetStudy","phase":"end","seq":3')
    export = AtnaExporter("arr", trail.path, repo, "site-a", committed=lambda: durable,  # type: ignore[arg-type]
                          hostname="h")
    export.run_once()
    assert repo.seqs() == [2]
    assert export.load_cursor().seq == 2


def test_a_lost_or_stale_offset_falls_back_to_a_scan(trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(trail, 2)
    export = exporter(trail, repo)
    export.run_once()
    export.cursor_path.write_text('{"format": 1, "seq": 2, "offset": 5}')  # offset no longer a line end
    export.run_once()
    assert repo.seqs() == [2, 4, 4]  # resent past seq 2, nothing skipped
    export.cursor_path.write_text("garbage")
    export.run_once()
    assert repo.seqs()[3:] == [2, 4], "an unreadable cursor means sending again, never a gap"
