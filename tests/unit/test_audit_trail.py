"""The audit trail's chain, driven directly: every kind of tampering is named at
the exact first bad record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsvault.daemon.audit import trail as audit
from pacsvault.daemon.errors import Unavailable


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, bytes, object, list[dict]]:
    key, signer = audit.load_or_create_keys(tmp_path / "keys")
    witnessed: list[dict] = []
    t = audit.AuditTrail(tmp_path / "trail.jsonl", key, signer, checkpoint_every=5, witness=witnessed.append)
    for n in range(12):
        t.append({"action": "GetInstance", "principal": "reader-1", "patient_id": f"P{n % 3}", "phase": "begin"})
    t.close()
    return t.path, key, t.public_key, witnessed


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def check(path: Path, key: bytes, public: object, witnessed: list[dict]) -> audit.Problem | None:
    return audit.verify(path, key, public, audit.read_checkpoints(path.with_name(path.name + ".checkpoints"))
                        + witnessed)


def test_an_untouched_trail_verifies(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    assert check(path, key, public, witnessed) is None
    assert [c["seq"] for c in witnessed] == [5, 10, 12]
    assert (path.parent / "keys" / "audit-hmac.key").stat().st_mode & 0o777 == 0o600


def test_one_changed_byte_is_named(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    data = lines(path)
    data[6] = data[6].replace(b"P0", b"P9")
    path.write_bytes(b"".join(data))
    assert check(path, key, public, witnessed) == audit.Problem(7, "its tag does not match its content (altered or forged)")


def test_a_deleted_record_is_named(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    data = lines(path)
    del data[3]
    path.write_bytes(b"".join(data))
    problem = check(path, key, public, witnessed)
    assert problem is not None and problem.seq == 4 and "deleted or reordered" in problem.reason


def test_two_swapped_records_are_named(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    data = lines(path)
    data[8], data[9] = data[9], data[8]
    path.write_bytes(b"".join(data))
    problem = check(path, key, public, witnessed)
    assert problem is not None and problem.seq == 9


def test_a_forged_record_is_named(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    data = lines(path)
    record = json.loads(data[4])
    record["principal"] = "someone-else"
    record["tag"] = audit.tag_of(b"not the key" * 3, record["prev"], {k: v for k, v in record.items() if k != "tag"})
    data[4] = audit.canonical(record) + b"\n"
    path.write_bytes(b"".join(data))
    assert check(path, key, public, witnessed) == audit.Problem(5, "its tag does not match its content (altered or forged)")


def test_a_truncated_tail_is_caught_against_the_witness(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    path.write_bytes(b"".join(lines(path)[:7]))
    (path.with_name(path.name + ".checkpoints")).write_bytes(b"")  # the local checkpoints go too
    problem = check(path, key, public, witnessed)
    assert problem is not None and problem.seq == 8 and "cut off" in problem.reason
    assert check(path, key, public, []) is None, "without a witness a clean cut cannot be seen"


def test_a_forged_checkpoint_is_refused(written) -> None:  # type: ignore[no-untyped-def]
    path, key, public, witnessed = written
    forged = dict(witnessed[-1], seq=99)
    problem = check(path, key, public, [forged])
    assert problem is not None and "signature is invalid" in problem.reason


def test_an_unwritable_trail_refuses(tmp_path: Path) -> None:
    key, signer = audit.load_or_create_keys(tmp_path / "keys")
    (tmp_path / "gone").mkdir()
    t = audit.AuditTrail(tmp_path / "gone" / "trail.jsonl", key, signer)
    (tmp_path / "gone").rmdir()
    with pytest.raises(Unavailable, match="audit trail cannot be written"):
        t.append({"action": "GetStudy"})
    t.close()
