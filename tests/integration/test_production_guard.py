"""The production guard on a real daemon (issue 16): what is off says so in health; tokens are short-lived
and go idle by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc

from tests.conftest import run_cli

ROBOT = "spiffe://pacsvault/client/robot"


def test_encryption_or_audit_off_needs_an_acknowledgement_and_health_warns(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    unsafe = tmp_path / "unsafe.toml"
    unsafe.write_text("[encryption]\nenabled = false\n[audit]\nenabled = false\n")
    checked = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--config", str(unsafe), "--check-config"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 2 and "security.insecure_no_encryption" in checked.stderr, checked.stderr
    acknowledged = tmp_path / "bench.toml"
    acknowledged.write_text(unsafe.read_text() + "[security]\ninsecure_no_encryption = true\ninsecure_no_audit = true\n")
    daemon = daemon_factory(config=acknowledged)
    health = json.loads(run_cli(daemon.target, "health", "--json").stdout)
    assert health["state"] == "warning", health
    assert any("encryption at rest is off" in r for r in health["reasons"]), health["reasons"]
    assert any("audit trail is off" in r for r in health["reasons"]), health["reasons"]


def test_tokens_are_capped_and_go_idle_by_default(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pv.toml").write_text(f'[security]\nprincipals = [{{ identity = "{ROBOT}", roles = ["reader"] }}]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    with daemon.client() as admin:
        try:
            admin.create_token(ROBOT, ttl_seconds=31 * 86400)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "security.max_token_ttl_s" in exc.details()
        else:
            raise AssertionError("a 31-day token was issued")
        token = admin.create_token(ROBOT, ttl_seconds=30 * 86400)
        assert token.info.idle_timeout_seconds == 3600, "an idle timeout unless one is asked for"
        assert admin.create_token(ROBOT, ttl_seconds=600, idle_timeout_seconds=60).info.idle_timeout_seconds == 60
    health = json.loads(run_cli(daemon.target, "health", "--json").stdout)
    assert not any("insecure" in r for r in health["reasons"]), health["reasons"]
