"""The Ansible code passes ansible-lint (production profile) and a syntax check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", NO_COLOR="1",
           ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"))


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ANSIBLE_DIR, env=ENV, capture_output=True, text=True, timeout=240)


def test_ansible_lint_production_profile_passes() -> None:
    # The profile comes from ansible/.ansible-lint; naming it here too makes a
    # weakened config file fail this test rather than pass it.
    result = _run(str(BIN / "ansible-lint"), "--profile", "production", "--offline")
    assert result.returncode == 0, result.stdout + result.stderr


def test_playbook_syntax_check_passes() -> None:
    result = _run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory/example", "pacsvault-pair.yml")
    assert result.returncode == 0, result.stdout + result.stderr
