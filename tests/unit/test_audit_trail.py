"""The audit trail's chain, driven directly: every kind of tampering is named at
the exact first bad record, in the clear (encryption off) and sealed (on)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pacsvault.daemon.audit import trail as audit
from pacsvault.daemon.audit.codec import SealedCodec
from pacsvault.daemon.config import AuditConfig, Config
from pacsvault.daemon.crypto.appliance_keys import ApplianceKeys, open_keys
from pacsvault.daemon.crypto.keyring import Keyring, KeyringHolder
from pacsvault.daemon.errors import ConfigError, Unavailable


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
    assert check(path, key, public, witnessed) == audit.Problem(
        7, "its tag does not match its content (altered or forged)")


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
    assert check(path, key, public, witnessed) == audit.Problem(
        5, "its tag does not match its content (altered or forged)")


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


def test_written_records_reach_stable_storage_within_the_window(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A spy, not a stand-in: every flush still happens, it is only counted.
    flushed: list[float] = []
    real = os.fdatasync
    monkeypatch.setattr(audit.os, "fdatasync", lambda fd: (flushed.append(time.monotonic()), real(fd))[1])
    key, signer = audit.load_or_create_keys(tmp_path / "keys")
    t = audit.AuditTrail(tmp_path / "trail.jsonl", key, signer)
    written_at = time.monotonic()
    assert t.append_async({"action": "GetInstance", "phase": "begin"}, durable=False).result(timeout=5) == 1
    assert len(t.path.read_bytes().splitlines()) == 1, "written to the file before the caller goes on"
    deadline = time.monotonic() + 2
    while not flushed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert flushed and flushed[0] - written_at < audit._SYNC_WINDOW_S + 0.1
    before = len(flushed)
    assert t.append({"action": "StoreInstance", "phase": "begin"}) == 2  # durable: flushed before it returns
    assert len(flushed) == before + 1
    t.close()


# -- encryption on: sealed records, keys from the keyring ---------------------------

PATIENT_ID, PATIENT_NAME = "MRN-CANARY-4711", "Canary^Marker"
STUDY_UID, PRINCIPAL = "1.2.826.0.1.3680043.47114711", "spiffe://pacsvault/client/canary-ris"
MARKERS = (PATIENT_ID, PATIENT_NAME, STUDY_UID, PRINCIPAL, "canary", "Canary", "47114711")
AUTHENTICATION = "fails authentication: changed at rest, or sealed under another keyring"


def sealed_config(tmp_path: Path) -> Config:
    return dataclasses.replace(Config(data_dir=str(tmp_path / "data")),
                               audit=dataclasses.replace(AuditConfig(), checkpoint_every=5))


def another_keyring() -> ApplianceKeys:
    return ApplianceKeys.from_holder(KeyringHolder(Keyring.generate("another appliance"), None))


@pytest.fixture
def sealed(tmp_path: Path) -> SimpleNamespace:
    config = sealed_config(tmp_path)
    keys = open_keys(config)  # a real keyring file, beside the data dir
    assert keys is not None
    witnessed: list[dict] = []
    t = audit.open_trail(config, keys, witness=witnessed.append)
    for n in range(12):
        t.append({"action": "GetInstance", "principal": PRINCIPAL, "patient_id": PATIENT_ID,
                  "patient_name": PATIENT_NAME, "study_instance_uid": f"{STUDY_UID}.{n}", "phase": "begin"})
    t.close()
    return SimpleNamespace(config=config, keys=keys, trail=t, path=t.path, witnessed=witnessed)


def check_sealed(s: SimpleNamespace) -> audit.Problem | None:
    return s.trail.verify(audit.read_checkpoints(s.trail.checkpoints_path) + s.witnessed)


def rewrite_line(path: Path, index: int, change) -> None:  # type: ignore[no-untyped-def]
    data = lines(path)
    data[index] = change(data[index])
    path.write_bytes(b"".join(data))


def test_a_sealed_trail_holds_no_patient_data_and_reads_back(sealed: SimpleNamespace) -> None:
    for stored in (sealed.path, sealed.trail.checkpoints_path):
        raw = stored.read_bytes()
        assert raw and not any(marker.encode() in raw for marker in MARKERS), stored
    assert all(set(json.loads(line)) == {"seq", "sealed"} for line in lines(sealed.path))
    # Numbers, tags, signatures and the (public) key that signed them: nothing about any access.
    assert all(set(c) == {"seq", "tag", "time", "signature", "key"} for c in sealed.witnessed)
    records = list(sealed.trail.read_records())
    assert [r["seq"] for r in records] == list(range(1, 13))
    assert records[3]["patient_id"] == PATIENT_ID and records[3]["study_instance_uid"] == f"{STUDY_UID}.3"
    assert check_sealed(sealed) is None
    assert [c["seq"] for c in sealed.witnessed] == [5, 10, 12]


def test_no_audit_key_is_written_under_the_data_dir(sealed: SimpleNamespace) -> None:
    data_dir = Path(sealed.config.data_dir)
    written = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())
    assert written == ["audit/trail.jsonl", "audit/trail.jsonl.checkpoints"]
    assert sealed.config.key_file_path().exists() and data_dir not in sealed.config.key_file_path().parents
    # The same keyring derives the same keys: a restart continues the chain and its signatures.
    again = audit.open_trail(sealed.config, open_keys(sealed.config))
    assert again.append({"action": "GetStudy", "phase": "begin"}) == 13
    again.close()
    assert again.public_key.public_bytes_raw() == sealed.trail.public_key.public_bytes_raw()
    assert check_sealed(sealed) is None


def test_a_flipped_bit_inside_a_sealed_record_fails_authentication(sealed: SimpleNamespace) -> None:
    def flip(line: bytes) -> bytes:
        outer = json.loads(line)
        payload = bytearray(base64.b64decode(outer["sealed"]))
        payload[len(payload) // 2] ^= 0x04
        return audit.canonical({**outer, "sealed": base64.b64encode(bytes(payload)).decode()}) + b"\n"

    rewrite_line(sealed.path, 6, flip)
    assert check_sealed(sealed) == audit.Problem(7, f"line 7 {AUTHENTICATION}")


@pytest.mark.parametrize("change", [
    lambda line: line[:40] + (b"A" if line[40:41] != b"A" else b"B") + line[41:],  # a base64 character
    lambda line: line.replace(b'"seq":3', b'"seq":4'),  # renumbered to hide a gap
    lambda line: line[:25] + b"\xff" + line[26:],  # not even text any more
], ids=["payload-character", "renumbered", "binary-garbage"])
def test_any_changed_byte_of_a_sealed_line_names_that_record(sealed: SimpleNamespace, change) -> None:  # type: ignore[no-untyped-def]
    rewrite_line(sealed.path, 2, change)
    problem = check_sealed(sealed)
    assert problem is not None and problem.seq == 3 and problem.reason.startswith("line 3 "), problem


def test_deleted_and_swapped_sealed_records_are_named(sealed: SimpleNamespace) -> None:
    original = sealed.path.read_bytes()
    data = lines(sealed.path)
    del data[3]
    sealed.path.write_bytes(b"".join(data))
    assert check_sealed(sealed) == audit.Problem(4, "expected record 4, found 5 (deleted or reordered)")
    data = original.splitlines(keepends=True)
    data[8], data[9] = data[9], data[8]
    sealed.path.write_bytes(b"".join(data))
    assert check_sealed(sealed) == audit.Problem(9, "expected record 9, found 10 (deleted or reordered)")


def test_a_record_forged_under_another_keyring_fails_authentication(sealed: SimpleNamespace) -> None:
    genuine = sealed.trail.codec.decode(lines(sealed.path)[4].rstrip(b"\n"))
    forged = SealedCodec(another_keyring().audit_store).encode({**genuine, "principal": "someone-else"})
    rewrite_line(sealed.path, 4, lambda _: forged + b"\n")
    assert check_sealed(sealed) == audit.Problem(5, f"line 5 {AUTHENTICATION}")


def test_a_truncated_sealed_tail_is_caught_against_the_witness(sealed: SimpleNamespace) -> None:
    sealed.path.write_bytes(b"".join(lines(sealed.path)[:7]))
    sealed.trail.checkpoints_path.write_bytes(b"")  # the local checkpoints go too
    problem = check_sealed(sealed)
    assert problem is not None and problem.seq == 8 and "were cut off" in problem.reason


def test_a_sealed_trail_does_not_open_under_another_keyring(sealed: SimpleNamespace) -> None:
    with pytest.raises(ConfigError, match=r"none of its 12 records can be read with this appliance's keys "
                                          r"\(the first fails authentication"):
        audit.open_trail(sealed.config, another_keyring())
    with pytest.raises(ConfigError, match="written with encryption on"):
        audit.open_trail(sealed.config, None)
    other = another_keyring()
    problem = audit.verify(sealed.path, other.audit_chain_key, audit.checkpoint_signer(other.audit_chain_key)
                           .public_key(), [], SealedCodec(other.audit_store))
    assert problem == audit.Problem(1, f"line 1 {AUTHENTICATION}")


def test_a_damaged_newest_record_is_named_and_the_trail_goes_on(sealed: SimpleNamespace) -> None:
    rewrite_line(sealed.path, 11, lambda line: line[:30] + (b"A" if line[30:31] != b"A" else b"B") + line[31:])
    again = audit.open_trail(sealed.config, sealed.keys)  # refusing to start would stop every audited call
    assert again.append({"action": "GetStudy", "phase": "begin"}) == 13
    again.close()
    assert check_sealed(sealed) == audit.Problem(12, f"line 12 {AUTHENTICATION}")


def test_a_half_written_last_line_is_dropped_at_start(sealed: SimpleNamespace) -> None:
    with open(sealed.path, "ab") as out:  # a crash before the fsync: nobody was told it was recorded
        out.write(b'{"seq":13,"sealed":"AQID')
    again = audit.open_trail(sealed.config, sealed.keys)
    assert again.append({"action": "GetStudy", "phase": "begin"}) == 13
    again.close()
    assert check_sealed(sealed) is None


def test_a_security_alert_is_durable_before_it_returns(sealed: SimpleNamespace) -> None:
    t = audit.open_trail(sealed.config, sealed.keys)
    seq = t.record_security_alert("blob abc: frame 3 fails authentication (changed at rest)",
                                  f"{STUDY_UID}.1", f"{STUDY_UID}.1.1")
    assert seq == 13 and t.line_count() == 13  # on disk already, before close
    alert = list(t.read_records())[-1]
    t.close()
    assert (alert["action"], alert["alert"], alert["phase"], alert["outcome"]) == \
        ("SecurityAlert", "BlobAuthenticationFailed", "alert", "DATA_LOSS")
    assert alert["sop_instance_uid"] == f"{STUDY_UID}.1.1"
    assert STUDY_UID.encode() not in sealed.path.read_bytes()


def test_encryption_off_keeps_its_key_files(tmp_path: Path) -> None:
    config = dataclasses.replace(sealed_config(tmp_path), encryption=dataclasses.replace(
        Config().encryption, enabled=False))
    assert open_keys(config) is None
    t = audit.open_trail(config, None)
    t.append({"action": "GetStudy", "phase": "begin", "patient_id": PATIENT_ID})
    t.close()
    assert PATIENT_ID.encode() in t.path.read_bytes()
    keys_dir = config.resolve(config.audit.keys_dir)
    assert {p.name for p in keys_dir.iterdir()} == {"audit-hmac.key", "audit-signing.key"}
    assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in keys_dir.iterdir())
    assert t.verify(audit.read_checkpoints(t.checkpoints_path)) is None
