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


def test_requirements_name_every_collection_the_role_uses_at_the_tested_versions() -> None:
    """requirements.yml is what a controller installs (make provision-venv): it must name each
    collection a task calls, at the version the dev set's ansible bundle tests the role with."""
    import json
    import re

    import yaml

    used = set()
    for path in (ANSIBLE_DIR / "roles").rglob("*.yml"):
        used |= {".".join(m.groups()) for m in re.finditer(r"^\s+([a-z_]+)\.([a-z_]+)\.[a-z_]+:", path.read_text(),
                                                             re.M)}
    used -= {"ansible.builtin"}
    wanted = {c["name"]: c["version"] for c in yaml.safe_load((ANSIBLE_DIR / "requirements.yml").read_text())
              ["collections"]}
    assert used == set(wanted), (used, wanted)
    bundled = Path(sys.executable).parents[1] / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
        / "site-packages" / "ansible_collections"
    for name, version in wanted.items():
        manifest = json.loads((bundled / name.replace(".", "/") / "MANIFEST.json").read_text())
        assert manifest["collection_info"]["version"] == version, name


def test_the_provision_extra_is_ansible_core_at_the_tested_version() -> None:
    """The controller's install is pacsvault and ansible-core, the one the dev set's bundle brings."""
    import tomllib
    from importlib.metadata import version

    extras = tomllib.loads((ANSIBLE_DIR.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["provision"] == [f"ansible-core=={version('ansible-core')}"]
