"""The role's TOML writer round-trips the daemon's own example config."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

from pacsvault.daemon import config as daemon_config

FILTER = (Path(__file__).resolve().parents[2]
          / "ansible/roles/pacsvault_appliance/filter_plugins/pacsvault_toml.py")


def _to_toml():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("pacsvault_toml", FILTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.to_toml


def test_example_config_round_trips_and_the_daemon_accepts_it() -> None:
    example = tomllib.loads(daemon_config.EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    written = _to_toml()(example)
    assert tomllib.loads(written) == example
    daemon_config.from_dict(tomllib.loads(written))


def test_awkward_strings_and_nested_values_survive() -> None:
    data = {"a": 'quote " backslash \\ newline \n tab \t é', "b": {"c d": [1, 2.5, True], "e": {"f": "g"}},
            "t": [{"x": 1}, {"x": 2, "y": {"z": "w"}}]}
    assert tomllib.loads(_to_toml()(data)) == data


def test_null_is_refused_with_its_key() -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=r"storage\.compression_level is null"):
        _to_toml()({"storage": {"compression_level": None}})


def _daemon_config(variables: dict) -> dict:  # type: ignore[type-arg]
    """What vars/main.yml builds, for plain (untemplated) variables."""
    config = {"data_dir": variables["pacsvault_appliance_data_dir"],
              "server": {"listen": variables["pacsvault_appliance_listen"]}}
    for table, values in variables.get("pacsvault_appliance_config", {}).items():
        config[table] = {**config.get(table, {}), **values} if isinstance(values, dict) else values
    config["tiers"] = variables["pacsvault_appliance_tiers"]
    return config


@pytest.mark.parametrize("inventory_vars", [None, "inventory/example/group_vars/pacsvault_pair.yml"])
def test_role_defaults_and_example_inventory_give_configs_the_daemon_accepts(inventory_vars: str | None) -> None:
    import yaml

    ansible_dir = FILTER.parents[3]
    variables = yaml.safe_load((ansible_dir / "roles/pacsvault_appliance/defaults/main.yml").read_text())
    if inventory_vars:
        variables |= yaml.safe_load((ansible_dir / inventory_vars).read_text())
    written = _to_toml()(_daemon_config(variables))
    daemon_config.from_dict(tomllib.loads(written))
