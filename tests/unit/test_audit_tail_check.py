"""The tail check at start, on a real trail file: a cut is recorded past every vouched number,
named at the cut by verify, followed across by readers; a witness away holds checkpoints back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsvault.daemon.audit import trail as audit
from pacsvault.daemon.audit.alerts import AlertSink
from pacsvault.daemon.audit.chain import RESUMED, tags_at
from pacsvault.daemon.audit.follow import Cursor, records_after
from pacsvault.daemon.audit.tail_check import TailCheck
from pacsvault.daemon.errors import Unavailable


class Witness:
    """The peer's checkpoints, kept in a list (the append-only part is tested against a real peer)."""

    def __init__(self) -> None:
        self.held: list[dict] = []
        self.away = False
        self.waits: list[bool] = []  # whether each ask was willing to wait for the peer

    def put(self, checkpoint: dict) -> None:
        self.held.append(checkpoint)

    def listed(self, min_seq: int, wait: bool) -> list[str]:
        self.waits.append(wait)
        if self.away:
            raise Unavailable("the witness at peer:1 could not be asked (UNAVAILABLE)")
        return [json.dumps(c) for c in self.held if c["seq"] >= min_seq]


def open_trail(tmp_path: Path, witness: Witness) -> audit.AuditTrail:
    key, signer = audit.load_or_create_keys(tmp_path / "keys")
    return audit.AuditTrail(tmp_path / "trail.jsonl", key, signer, checkpoint_every=5, witness=witness.put)


def write(trail: audit.AuditTrail, n: int) -> None:
    for i in range(n):
        trail.append({"action": "GetStudy", "phase": "begin", "study_instance_uid": f"1.2.{i}"})


def cut(trail_path: Path, keep: int) -> None:
    """What an intruder does while the appliance is down: the tail and the local checkpoints above it go."""
    lines = trail_path.read_bytes().splitlines(keepends=True)
    trail_path.write_bytes(b"".join(lines[:keep]))
    local = trail_path.with_name(trail_path.name + ".checkpoints")
    local.write_bytes(b"".join(line for line in local.read_bytes().splitlines(keepends=True)
                               if json.loads(line)["seq"] <= keep))


def verify(trail: audit.AuditTrail, witness: Witness) -> audit.Problem | None:
    return trail.verify(audit.read_checkpoints(trail.checkpoints_path) + witness.held)


@pytest.fixture
def witness() -> Witness:
    return Witness()


def test_a_cut_is_recorded_past_every_vouched_number_and_named_at_the_cut(tmp_path: Path, witness: Witness) -> None:
    first = open_trail(tmp_path, witness)
    write(first, 12)
    first.close()
    assert max(c["seq"] for c in witness.held) == 12
    cut(first.path, 7)

    again = open_trail(tmp_path, witness)
    check = TailCheck(again, witness.listed, AlertSink(again))
    assert check.run_once() and check.start_seq == 7
    write(again, 8)  # keep working: checkpoints resume
    again.close()
    records = list(audit.read_records(again.path))
    resumption = records[7]
    assert (resumption["action"], resumption["seq"], resumption["cut_after"], resumption["vouched"]) == \
        (RESUMED, 13, 7, 12)
    assert [r["seq"] for r in records[8:]] == list(range(14, 22)), "no number the witness vouched for again"
    assert min(c["seq"] for c in witness.held if c not in witness.held[:3]) > 12
    problem = verify(again, witness)
    assert problem is not None and problem.seq == 8 and "records 8..12 were cut off" in problem.reason


def test_readers_follow_across_a_resumption_record(tmp_path: Path, witness: Witness) -> None:
    first = open_trail(tmp_path, witness)
    write(first, 10)
    first.close()
    cut(first.path, 4)
    again = open_trail(tmp_path, witness)
    TailCheck(again, witness.listed, AlertSink(again)).run_once()
    write(again, 2)
    again.close()
    seen = [int(r["seq"]) for r, _ in records_after(again.path, again.codec, Cursor(), "test")]
    assert seen == [1, 2, 3, 4, 11, 12, 13]
    assert tags_at(again.path, again.codec, {4, 12}).keys() == {4, 12}


def test_an_intact_tail_changes_nothing(tmp_path: Path, witness: Witness) -> None:
    first = open_trail(tmp_path, witness)
    write(first, 12)
    first.close()
    again = open_trail(tmp_path, witness)
    assert TailCheck(again, witness.listed, AlertSink(again)).run_once()
    write(again, 3)
    again.close()
    assert [r["seq"] for r in audit.read_records(again.path)] == list(range(1, 16))
    assert verify(again, witness) is None


def test_checkpoints_wait_while_the_witness_is_away(tmp_path: Path, witness: Witness) -> None:
    first = open_trail(tmp_path, witness)
    write(first, 12)
    first.close()
    cut(first.path, 7)
    witness.away = True
    again = open_trail(tmp_path, witness)
    check = TailCheck(again, witness.listed, AlertSink(again))
    assert not check.run_once(wait=False)  # as at start: both sites may be starting, neither listening yet
    write(again, 9)  # the appliance serves meanwhile: records 8..16, re-using numbers the witness holds
    again.checkpoint_if_due()
    assert max(c["seq"] for c in audit.read_checkpoints(again.checkpoints_path)) <= 7, "none vouches for them"
    witness.away = False
    assert check.run_once()  # a retry, in the background: it waits for a peer just back
    assert witness.waits == [False, True]
    write(again, 1)
    again.close()
    records = list(audit.read_records(again.path))
    assert (records[16]["action"], records[16]["seq"], records[16]["cut_after"]) == (RESUMED, 17, 7)
    problem = verify(again, witness)
    assert problem is not None and problem.seq == 8 and "cut off" in problem.reason


def test_a_damaged_newest_record_is_an_alert_at_start(tmp_path: Path, witness: Witness) -> None:
    first = open_trail(tmp_path, witness)
    write(first, 6)
    first.close()
    lines = first.path.read_bytes().splitlines(keepends=True)
    first.path.write_bytes(b"".join(lines[:-1]) + b'{"seq": 6, "damaged\n')
    again = open_trail(tmp_path, witness)
    assert again.damaged_tail
    TailCheck(again, witness.listed, AlertSink(again)).run_once()
    again.close()
    raised = [r for r in audit.read_records(again.path) if r.get("alert") == "AuditChainBroken"]
    assert len(raised) == 1 and "newest record" in str(raised[0]["summary"])
