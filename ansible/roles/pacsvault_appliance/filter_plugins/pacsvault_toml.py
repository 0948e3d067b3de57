"""pacsvault_appliance_to_toml: a mapping as a TOML document, for pacsvault.toml.

The role builds the daemon's config as a mapping shaped like
pacsvault.example.toml and writes it with this filter, so any key the daemon
knows (today's or a later version's) can be set without touching the role;
the daemon's own --check-config then judges names and values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML: scalars first, then [tables], then [[arrays of tables]]."""
    if not isinstance(data, Mapping):
        raise AnsibleFilterError(f"pacsvault_appliance_to_toml: expected a mapping, got {type(data).__name__}")
    lines: list[str] = []
    _table(lines, data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return _is_list(value) and len(value) > 0 and all(isinstance(item, Mapping) for item in value)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _table(lines: list[str], table: Mapping[str, Any], path: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if not _is_table(v) and not _is_table_array(v)]
    tables = [(k, v) for k, v in table.items() if _is_table(v)]
    arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
    if path and (scalars or not (tables or arrays)):
        lines += ["", f"[{_dotted(path)}]"]
    for key, value in scalars:
        lines.append(f"{_key(key)} = {_value(value, path + [key])}")
    for key, value in tables:
        _table(lines, value, path + [key])
    for key, items in arrays:
        for i, item in enumerate(items):
            lines += ["", f"[[{_dotted(path + [key])}]]"]
            for item_key, item_value in item.items():
                where = path + [f"{key}[{i}]", item_key]
                lines.append(f"{_key(item_key)} = {_value(item_value, where)}")


def _dotted(path: list[str]) -> str:
    return ".".join(_key(part) for part in path)


def _key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any, path: list[str]) -> str:
    # bool before int: True is an int to Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(float(value))
    if isinstance(value, str):
        # JSON's escapes (\" \\ \n \t \uXXXX ...) are all valid in a TOML basic string.
        return json.dumps(str(value))
    if _is_list(value):
        return "[" + ", ".join(_value(item, path) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v, path + [k])}" for k, v in value.items()) + " }"
    where = ".".join(str(part) for part in path)
    if value is None:
        raise AnsibleFilterError(f"pacsvault config key {where} is null; TOML has no null: set a value or leave it out")
    raise AnsibleFilterError(f"pacsvault config key {where}: cannot write a {type(value).__name__} as TOML")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pacsvault_appliance_to_toml": to_toml}
