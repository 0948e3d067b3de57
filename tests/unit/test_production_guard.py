"""The production guard (issue 16): weakening a protection takes an explicit insecure_* key, by name."""

from __future__ import annotations

from typing import Any

import pytest

from pacsvault.daemon import config
from pacsvault.daemon.errors import ConfigError

DAY = 86400


@pytest.mark.parametrize(("raw", "named"), [
    ({"encryption": {"enabled": False}}, "security.insecure_no_encryption"),
    ({"audit": {"enabled": False}}, "security.insecure_no_audit"),
    ({"security": {"max_token_ttl_s": 31.0 * DAY}}, "security.insecure_long_token_ttl"),
    ({"security": {"token_idle_timeout_s": 0.0}}, "security.insecure_no_token_idle_timeout"),
])
def test_each_weakening_needs_its_acknowledgement(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config.from_dict(raw)
    section = next(iter(raw))
    key = named.rsplit(".", 1)[1]
    acknowledged = {**raw, "security": {**raw.get("security", {}), key: True}} if section != "security" else \
        {"security": {**raw["security"], key: True}}
    config.from_dict(acknowledged)  # accepted, and reported by health (see the integration test)


def test_the_defaults_are_safe_and_bounded() -> None:
    security = config.Config().security
    assert security.max_token_ttl_s == 30 * DAY and security.token_idle_timeout_s > 0
    with pytest.raises(ConfigError, match="security.max_token_ttl_s"):
        config.from_dict({"security": {"max_token_ttl_s": 400.0 * DAY, "insecure_long_token_ttl": True}})
