"""The ATNA exporter's passes over a real trail: order, the cursor, resuming, never past the durable end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pacsvault.daemon.audit.exporter import AtnaExporter, Cursor
from pacsvault.daemon.audit.trail import AuditTrail, load_or_create_keys, open_trail
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import open_keys
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
            out.append(int(text.rsplit("audit record ", 1)[1].split(")")[0]))
        return out

    def roots(self):  # type: ignore[no-untyped-def]
        return [validate(raw.split(BOM.encode(), 1)[1]) for raw in self.received]


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


@pytest.fixture
def sealed_trail(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = Config(data_dir=str(tmp_path / "data"))
    trail = open_trail(config, open_keys(config))
    yield trail
    trail.close()


def exporter(trail: AuditTrail, repo: FakeRepository, **kwargs: object) -> AtnaExporter:
    return AtnaExporter("arr", trail.path, repo, "site-a", committed=lambda: trail.last_seq,  # type: ignore[arg-type]
                        hostname="h", codec=trail.codec, **kwargs)  # type: ignore[arg-type]


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


def test_a_sealed_trail_is_opened_for_export(sealed_trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(sealed_trail, 3)
    assert b"1.2.0" not in sealed_trail.path.read_bytes()
    export = exporter(sealed_trail, repo)
    assert export.run_once() == 6 and repo.seqs() == [2, 4, 6]
    studies = [r.find("ParticipantObjectIdentification").get("ParticipantObjectID") for r in repo.roots()]
    assert studies == ["1.2.0", "1.2.1", "1.2.2"]
    assert export.load_cursor() == Cursor(6, sealed_trail.path.stat().st_size)


def test_export_stops_at_a_sealed_record_that_fails_authentication(sealed_trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(sealed_trail, 3)
    data = sealed_trail.path.read_bytes().splitlines(keepends=True)
    data[3] = data[3][:30] + (b"A" if data[3][30:31] != b"A" else b"B") + data[3][31:]
    sealed_trail.path.write_bytes(b"".join(data))
    export = exporter(sealed_trail, repo)
    assert export.run_once() == 3 and repo.seqs() == [2]  # nothing past it: never a gap
    assert export.run_once() == 0


def test_a_security_alert_is_exported_as_110113(sealed_trail: AuditTrail) -> None:
    repo = FakeRepository()
    calls(sealed_trail, 1)
    seq = sealed_trail.record_security_alert("blob 9f2c: frame 3 fails authentication (changed at rest)",
                                             "1.2.840.99.1", "1.2.840.99.1.1.1")
    exporter(sealed_trail, repo).run_once()
    assert repo.seqs() == [2, seq]
    alert = repo.roots()[-1]
    ident = alert.find("EventIdentification")
    assert ident.find("EventID").get("csd-code") == "110113"
    assert (ident.get("EventActionCode"), ident.get("EventOutcomeIndicator")) == ("E", "8")
    assert (ident.find("EventTypeCode").get("csd-code"), ident.find("EventTypeCode").get("codeSystemName")) == \
        ("PV-AT-REST-AUTH", "99PACSVAULT")
    assert "frame 3 fails authentication" in ident.find("EventOutcomeDescription").text
    [reporter] = alert.findall("ActiveParticipant")
    assert (reporter.get("UserID"), reporter.get("UserIsRequestor")) == ("site-a", "true")
    [study] = alert.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == "1.2.840.99.1"
    assert study.find("ParticipantObjectDescription/SOPClass/Instance").get("UID") == "1.2.840.99.1.1.1"
