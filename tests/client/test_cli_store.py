"""`pacsvault store` against a real daemon: a line per file, patient CDs, exit codes, progress."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.client.cli_support import ROOT, patient_cd, run_cli_on_terminal
from tests.conftest import Daemon, dicom_bytes, identity, run_cli


def lines_by_path(stdout: str) -> dict[str, str]:
    """``PATH: what happened`` lines keyed by path."""
    out = {}
    for line in stdout.splitlines():
        path, _, what = line.partition(": ")
        out[path] = what
    return out


def test_a_patient_cd_imports_cleanly_and_says_what_happened_to_each_file(daemon: Daemon, tmp_path: Path) -> None:
    cd = patient_cd(tmp_path / "CD")
    result = run_cli(daemon.target, "store", str(cd.root))
    assert result.returncode == 0, result.stdout + result.stderr  # nothing valid was refused
    said = lines_by_path(result.stdout)
    assert said.pop(str(cd.root / "DICOMDIR")) == "skipped: a DICOMDIR (the index of a DICOM medium, not an image)"
    assert said.pop(str(cd.root / "README.TXT")) == "skipped: not a DICOM file (no DICM prefix at byte 128)"
    assert said.pop(str(cd.root / "AUTORUN.INF")).startswith("skipped: not a DICOM file")
    # The first image is on the CD twice, in two transfer syntaxes; whichever arrived first is
    # stored, the other is a duplicate that names both syntaxes, not a refusal.
    first = f"{ROOT}.900.1.1"
    twins = {p: w for p, w in said.items() if first in w}
    assert len(twins) == 2, said
    assert sorted(w.split(" ")[0] for w in twins.values()) == ["duplicate", "stored"]
    [note] = [w for w in twins.values() if w.startswith("duplicate")]
    assert re.fullmatch(rf"duplicate {re.escape(first)}: already stored in (Explicit|Implicit) VR Little Endian; "
                        r"this copy is (Explicit|Implicit) VR Little Endian and was not stored", note), note
    assert note.count("Explicit") == 1 and note.count("Implicit") == 1
    others = [w for p, w in said.items() if p not in twins]
    assert sorted(others) == [f"stored {ROOT}.900.1.2", f"stored {ROOT}.900.1.3"]
    assert result.stderr.strip() == "3 stored, 1 duplicate, 3 skipped, 0 rejected"
    with daemon.client() as client:
        assert client.health().index.instances == 3
    again = run_cli(daemon.target, "store", str(cd.root), "--json")
    assert again.returncode == 0, again.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, again.stdout.splitlines())}
    assert {n: r["status"] for n, r in rows.items()} == {
        "DICOMDIR": "skipped", "README.TXT": "skipped", "AUTORUN.INF": "skipped", "IM_IMPL": "duplicate",
        "IM000000": "duplicate", "IM000001": "duplicate", "IM000002": "duplicate"}
    assert rows["README.TXT"]["message"].startswith("not a DICOM file") and rows["README.TXT"]["code"] == ""
    assert all(len(r["digest"]) == 64 for n, r in rows.items() if r["status"] == "duplicate")


def test_a_dicomdir_under_another_name_is_recognised_by_its_sop_class(daemon: Daemon, tmp_path: Path) -> None:
    cd = patient_cd(tmp_path / "CD")
    index = tmp_path / "index.dcm"
    index.write_bytes((cd.root / "DICOMDIR").read_bytes())
    result = run_cli(daemon.target, "store", str(index))
    assert (result.returncode, result.stdout.strip()) == (
        0, f"{index}: skipped: a DICOMDIR (the index of a DICOM medium, not an image)")


def test_refusals_partial_success_and_their_exit_codes(daemon: Daemon, tmp_path: Path) -> None:
    good, bad = tmp_path / "in" / "a.dcm", tmp_path / "in" / "b.dcm"
    good.parent.mkdir()
    good.write_bytes(dicom_bytes(**identity(1)))
    truncated = dicom_bytes(**identity(2))
    bad.write_bytes(truncated[: len(truncated) // 2])
    mixed = run_cli(daemon.target, "store", str(good.parent))
    assert mixed.returncode == 7, mixed.stdout + mixed.stderr  # partial success
    said = lines_by_path(mixed.stdout)
    assert said[str(good)] == f"stored {identity(1)['SOPInstanceUID']}"
    assert said[str(bad)].startswith("rejected: ") and said[str(bad)].endswith("(INVALID_ARGUMENT)")
    assert "Traceback" not in mixed.stderr
    only_bad = run_cli(daemon.target, "store", str(bad))
    assert only_bad.returncode == 6  # rejected input, nothing stored
    # Same SOP Instance UID, same transfer syntax, other bytes: a real conflict, refused.
    other = tmp_path / "other.dcm"
    other.write_bytes(dicom_bytes(PatientID="SOMEONE-ELSE", **identity(1)))
    conflict = run_cli(daemon.target, "store", str(other))
    assert conflict.returncode == 6
    assert conflict.stdout.startswith(f"{other}: rejected: SOP Instance UID {identity(1)['SOPInstanceUID']} is "
                                      "already stored with different content")
    assert conflict.stdout.rstrip().endswith("(ALREADY_EXISTS)")


def test_missing_paths_and_an_unreachable_appliance_end_in_one_line(daemon: Daemon, tmp_path: Path) -> None:
    missing = run_cli(daemon.target, "store", str(tmp_path / "nope"))
    assert (missing.returncode, missing.stdout) == (6, "")
    assert missing.stderr == f"pacsvault: {tmp_path / 'nope'}: no such file or folder\n"
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(20):
        (folder / f"{n:02d}.dcm").write_bytes(dicom_bytes(**identity(100 + n)))
    daemon.stop()
    gone = run_cli(daemon.target, "store", "-j", "2", str(folder))
    assert gone.returncode == 5, gone.stdout + gone.stderr  # unavailable
    assert "Traceback" not in gone.stderr
    said = lines_by_path(gone.stdout)
    assert 1 <= len(said) <= 4, "it stops instead of trying every file"
    assert all(w.startswith("rejected: ") and w.endswith("(UNAVAILABLE)") for w in said.values())
    summary, stopped = gone.stderr.splitlines()
    assert re.fullmatch(r"0 stored, 0 duplicate, 0 skipped, \d rejected; 1\d files not sent", summary), summary
    assert stopped.startswith(f"pacsvault: stopped: cannot reach the appliance at {daemon.target}")


def test_progress_is_drawn_on_a_terminal_only(daemon: Daemon, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(6):
        (folder / f"{n}.dcm").write_bytes(dicom_bytes(**identity(200 + n)))
    seen = run_cli_on_terminal(daemon.target, "store", str(folder))
    assert seen.returncode == 0, seen.terminal
    assert "6/6" in seen.terminal and "file" in seen.terminal and "%|" in seen.terminal, seen.terminal
    assert len(seen.stdout.splitlines()) == 6  # the lines stay on stdout, whole
    piped = run_cli(daemon.target, "store", str(folder))
    assert "%|" not in piped.stderr and "\r" not in piped.stderr
    assert piped.stderr == "0 stored, 6 duplicate, 0 skipped, 0 rejected\n"
