"""The README's command lines are the CLI's: each command exists, the exit-code table is the
code's, and the `pacsvault` it tells people to run is installed beside the interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.main import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """The subcommand words of every indented README line that starts with `pacsvault `."""
    found = []
    for line in README.splitlines():
        if not line.lstrip().startswith("pacsvault ") or not line.startswith("    "):
            continue
        words = []
        for word in line.split()[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            words.append(word)
        if words:
            found.append(words)
    return found


@pytest.mark.parametrize("words", readme_commands(), ids=" ".join)
def test_every_command_the_readme_shows_exists(words: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*words, "--help"])
    assert done.value.code == 0


def test_the_readme_covers_the_commands_people_ask_about() -> None:
    shown = {" ".join(w) for w in readme_commands()}
    assert {"store", "find", "get", "get-study", "get-series", "metadata", "health", "restore", "tiers drain",
            "replication reseed", "share create"} <= shown


WORDS = {"OK": "done", "UNHEALTHY": "the command worked and reports trouble", "USAGE": "usage",
         "NOT_FOUND": "not found", "PERMISSION_DENIED": "permission denied", "UNAVAILABLE": "unavailable",
         "REJECTED": "rejected input", "PARTIAL": "partial success", "DATA_LOSS": "data loss",
         "FAILURE": "any other failure", "INTERRUPTED": "interrupted"}


def test_the_exit_code_table_is_the_code() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README, flags=re.MULTILINE))
    constants = {name: value for name, value in vars(exit_codes).items()
                 if name.isupper() and not name.startswith("_") and isinstance(value, int)}
    assert set(constants) == set(WORDS)
    assert len(set(constants.values())) == len(constants), "each code means one thing"
    assert sorted(int(code) for code in table) == sorted(constants.values())
    for name, value in constants.items():
        assert table[str(value)].startswith(WORDS[name]), (name, table[str(value)])
    assert exit_codes.USAGE == 2  # argparse's own


def test_the_pacsvault_command_is_installed_where_the_readme_says() -> None:
    assert ". .venv/bin/activate" in README
    command = Path(sys.executable).parent / "pacsvault"
    assert command.exists(), "make venv installs the console script beside the interpreter"
    result = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("pacsvault ")
