"""get / get-study / get-series against a real daemon: resumable folders, stdout, reading order,
the per-message deadline, and clean refusals of bad output paths."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pacsvault.client import DeadlineExceeded
from tests.client.cli_support import ROOT, numbered_series, paused, run_cli_on_terminal, sop_of
from tests.conftest import Daemon, run_cli

STUDY = f"{ROOT}.7"


@pytest.fixture
def numbered_study(daemon: Daemon) -> dict[str, bytes]:
    """Two series of 12 and 3 instances whose SOP UIDs sort opposite to their InstanceNumbers."""
    instances = numbered_series(7, 2, 12) + numbered_series(7, 1, 3)
    with daemon.client() as client:
        assert all(client.store(data).status == "stored" for _, data in instances)
    return {sop_of(data): data for _, data in instances}


def reading_order() -> list[str]:
    """What a reader expects, series by series (index order), InstanceNumber 1, 2, ... 12."""
    return [f"{ROOT}.7.1.{4 - n}" for n in range(1, 4)] + [f"{ROOT}.7.2.{13 - n}" for n in range(1, 13)]


def test_get_study_resumes_keeping_verified_files(daemon: Daemon, numbered_study: dict[str, bytes],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "deep" / "study"  # parents are made, when the first instance arrives
    first = run_cli(daemon.target, "get-study", STUDY, "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith("wrote 15 instances (") and first.stderr.rstrip().endswith(f"to {out}")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {f"{u}.dcm": d for u, d in numbered_study.items()}
    # An interrupted earlier run: files missing, one cut short, a stale .part; the rest untouched.
    names = sorted(out.iterdir())
    for gone in names[:4]:
        gone.unlink()
    names[4].write_bytes(names[4].read_bytes()[:1000])
    (out / f"{names[0].name}.part").write_bytes(b"half")
    kept = {p: p.stat().st_mtime_ns for p in names[5:]}
    time.sleep(0.01)
    again = run_cli(daemon.target, "get-study", STUDY, "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stderr.rstrip().endswith(f"to {out}; 10 were already there, verified")
    assert again.stderr.startswith("wrote 5 instances (")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {f"{u}.dcm": d for u, d in numbered_study.items()}
    assert {p: p.stat().st_mtime_ns for p in names[5:]} == kept, "verified files are not rewritten"


def test_get_series_is_resumable_too_and_shows_progress_on_a_terminal(
        daemon: Daemon, numbered_study: dict[str, bytes], tmp_path: Path) -> None:
    seen = run_cli_on_terminal(daemon.target, "get-series", f"{STUDY}.2", "-o", str(tmp_path / "s"))
    assert seen.returncode == 0, seen.terminal
    assert "get-series" in seen.terminal and "12/12" in seen.terminal and "%|" in seen.terminal
    assert len(list((tmp_path / "s").iterdir())) == 12
    study = run_cli_on_terminal(daemon.target, "get-study", STUDY, "-o", str(tmp_path / "t"))
    assert study.returncode == 0 and "15/15" in study.terminal, study.terminal
    again = run_cli(daemon.target, "get-series", f"{STUDY}.2", "-o", str(tmp_path / "s"))
    assert again.returncode == 0 and "wrote 0 instances" in again.stderr and "12 were already there" in again.stderr
    assert "%|" not in again.stderr and "\r" not in again.stderr


def test_dash_streams_to_stdout_in_reading_order(daemon: Daemon, numbered_study: dict[str, bytes]) -> None:
    uid = f"{ROOT}.7.2.5"
    one = subprocess.run([sys.executable, "-m", "pacsvault.client.cli.main", "get", uid, "-o", "-"],
                         capture_output=True, env=dict(os.environ, PACSVAULT_SERVER=daemon.target), timeout=60)
    assert one.returncode == 0 and one.stdout == numbered_study[uid]
    whole = subprocess.run([sys.executable, "-m", "pacsvault.client.cli.main", "get-study", STUDY, "-o", "-"],
                           capture_output=True, env=dict(os.environ, PACSVAULT_SERVER=daemon.target), timeout=60)
    assert whole.returncode == 0, whole.stderr
    with tarfile.open(fileobj=io.BytesIO(whole.stdout), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"{u}.dcm" for u in reading_order()]
        for member in members:
            content = tar.extractfile(member)
            assert content is not None and content.read() == numbered_study[member.name.removesuffix(".dcm")]
    assert whole.stderr == b"wrote 15 instances to stdout (tar)\n"
    with daemon.client() as client:
        assert [a.sop_instance_uid for a, _ in client.iter_study(STUDY)] == reading_order()
        assert [a.instance_number for a, _ in client.iter_series(f"{STUDY}.2")] == [str(n) for n in range(1, 13)]


def test_bad_outputs_and_unknown_uids_fail_in_one_line_leaving_nothing(
        daemon: Daemon, numbered_study: dict[str, bytes], tmp_path: Path) -> None:
    uid = f"{ROOT}.7.2.5"
    unknown = run_cli(daemon.target, "get-study", "1.2.3.404", "-o", str(tmp_path / "new"))
    assert unknown.returncode == 3  # not found
    assert unknown.stderr == "pacsvault: not found: no study with Study Instance UID 1.2.3.404 (NOT_FOUND)\n"
    assert not (tmp_path / "new").exists(), "an unknown study leaves no empty folder"
    assert run_cli(daemon.target, "get-series", "1.2.3.404", "-o", str(tmp_path / "new")).returncode == 3
    assert run_cli(daemon.target, "get", "1.2.3.404", "-o", str(tmp_path / "x.dcm")).returncode == 3
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob("x.dcm*"))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    onto_file = run_cli(daemon.target, "get-study", STUDY, "-o", str(a_file))
    assert (onto_file.returncode, onto_file.stderr) == (6, f"pacsvault: {a_file}: exists and is not a folder\n")
    no_folder = run_cli(daemon.target, "get", uid, "-o", str(tmp_path / "missing" / "x.dcm"))
    assert (no_folder.returncode, no_folder.stderr) == (6, f"pacsvault: {tmp_path / 'missing'}: no such folder\n")
    assert not (tmp_path / "missing").exists()
    clobber = run_cli(daemon.target, "get", uid, "-o", str(a_file))
    assert clobber.returncode == 6 and "exists with other content (--force replaces it)" in clobber.stderr
    assert a_file.read_text() == "not a folder"
    forced = run_cli(daemon.target, "get", uid, "-o", str(a_file), "--force")
    assert forced.returncode == 0 and a_file.read_bytes() == numbered_study[uid]
    same = run_cli(daemon.target, "get", uid, "-o", str(a_file))
    assert same.returncode == 0 and "already holds this instance (verified)" in same.stderr
    into_folder = run_cli(daemon.target, "get", uid, "-o", str(tmp_path))
    assert into_folder.returncode == 0 and (tmp_path / f"{uid}.dcm").read_bytes() == numbered_study[uid]
    for result in (unknown, onto_file, no_folder, clobber):
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_the_timeout_bounds_each_message_not_the_whole_stream(daemon: Daemon, numbered_study: dict[str, bytes],
                                                               tmp_path: Path) -> None:
    # A reader slower than the timeout in total: with a deadline for the whole stream this failed.
    with daemon.client(timeout=0.5) as client:
        started, got = time.monotonic(), []
        for attributes, _ in client.iter_study(STUDY):
            got.append(attributes.sop_instance_uid)
            time.sleep(0.08)
        assert len(got) == 15 and time.monotonic() - started > 1.0
    # An appliance that stops answering (SIGSTOP): each wait is bounded, so the stream ends.
    with paused(daemon):
        with daemon.client(timeout=1.0) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="no data from the appliance for 1 s"):
                client.get_instance(f"{ROOT}.7.2.5")
            assert time.monotonic() - started < 10
        stalled = run_cli(daemon.target, "--timeout", "1", "get-study", STUDY, "-o", str(tmp_path / "stalled"))
        assert stalled.returncode == 5, stalled.stderr  # unavailable: no answer in time
        assert stalled.stderr.startswith("pacsvault: no answer in time: no data from the appliance for 1 s")
        assert not (tmp_path / "stalled").exists()
        to_stdout = subprocess.run(
            [sys.executable, "-m", "pacsvault.client.cli.main", "--timeout", "1", "get-study", STUDY, "-o", "-"],
            capture_output=True, env=dict(os.environ, PACSVAULT_SERVER=daemon.target), timeout=60)
        assert to_stdout.returncode == 5
        assert to_stdout.stdout == b"", "no end-of-archive blocks: a broken stream never looks like a whole tar"
