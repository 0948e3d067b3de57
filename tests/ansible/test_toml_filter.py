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


def _principals():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("pacsvault_principals", FILTER.with_name("pacsvault_principals.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _daemon_config(variables: dict) -> dict:  # type: ignore[type-arg]
    """What vars/main.yml builds, for plain (untemplated) variables, with the pair's TLS files."""
    api_tls = variables["pacsvault_appliance_api_tls"]
    config = {"data_dir": variables["pacsvault_appliance_data_dir"],
              "server": {"listen": variables["pacsvault_appliance_listen"]},
              "web": {"listen": variables["pacsvault_appliance_web_listen"]},
              "metrics": {"listen": variables["pacsvault_appliance_metrics_listen"]}}
    for table, values in variables.get("pacsvault_appliance_config", {}).items():
        config[table] = {**config.get(table, {}), **values} if isinstance(values, dict) else values
    security = {}
    if variables["pacsvault_appliance_principals"]:
        security["principals"] = _principals().principals(variables["pacsvault_appliance_principals"])
    if api_tls != "none":
        assert api_tls == "pair"
        config["server"]["local_listen"] = variables["pacsvault_appliance_local_listen"]
        tls = variables["pacsvault_appliance_tls_dir"]
        security |= {"tls_cert_file": f"{tls}/appliance.crt", "tls_key_file": f"{tls}/appliance.key",
                     "client_ca_file": f"{tls}/ca.crt"}
    if security:
        config["security"] = security
    config["tiers"] = variables["pacsvault_appliance_tiers"]
    return config


@pytest.mark.parametrize("inventory_vars", [None, "inventory/example/group_vars/pacsvault_pair.yml"])
def test_role_defaults_and_example_inventory_give_configs_the_daemon_accepts(inventory_vars: str | None,
                                                                             tmp_path: Path) -> None:
    import yaml

    ansible_dir = FILTER.parents[3]
    variables = yaml.safe_load((ansible_dir / "roles/pacsvault_appliance/defaults/main.yml").read_text())
    if inventory_vars:
        variables |= yaml.safe_load((ansible_dir / inventory_vars).read_text())
    variables["pacsvault_appliance_tls_dir"] = str(tmp_path)  # where tls.yml would have placed them
    for name in ("appliance.crt", "appliance.key", "ca.crt"):
        (tmp_path / name).write_text("PEM\n")
    written = _to_toml()(_daemon_config(variables))
    daemon_config.from_dict(tomllib.loads(written))


def test_principals_by_name_or_identity_and_malformed_ones_named() -> None:
    from ansible.errors import AnsibleFilterError

    module = _principals()
    given = [{"name": "ris", "roles": ["ingest", "reader"]},
             {"identity": "spiffe://pacsvault/client/hospital-viewer", "roles": ["reader"]}]
    assert module.principals(given) == [
        {"identity": "spiffe://pacsvault/client/ris", "roles": ["ingest", "reader"]},
        {"identity": "spiffe://pacsvault/client/hospital-viewer", "roles": ["reader"]}]
    assert module.client_names(given) == ["ris"]
    for bad, says in (([{"roles": ["reader"]}], r"principals\[0\]: give either name"),
                      ([given[0], {"name": "x", "identity": "y", "roles": ["reader"]}], r"principals\[1\]"),
                      ([{"name": "RIS!", "roles": ["reader"]}], r"principals\[0\]\.name"),
                      ([{"name": "ris", "roles": "reader"}], r"roles must be a non-empty list"),
                      ([{"name": "ris", "roles": ["reader"], "role": 1}], r"unknown keys \['role'\]")):
        with pytest.raises(AnsibleFilterError, match=says):
            module.principals(bad)
