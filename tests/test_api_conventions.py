"""The API is a product: lint-clean protos, generated code in step, reflection,
standard health, and explicit public surfaces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import pacsvault.client
import pacsvault.hardware
from tests.conftest import Daemon

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_buf_lint_standard_is_clean() -> None:
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    result = subprocess.run([buf, "lint"], cwd=ROOT / "proto", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The API as it stood before the process-model round (commit e513606), built with
# `buf build -o` from that commit's proto/: clients written against it must keep working.
API_BASELINE = ROOT / "tests" / "fixtures" / "api" / "pacsvault-v1-e513606.binpb"


def test_api_changes_are_additive() -> None:
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    result = subprocess.run([buf, "breaking", "--against", str(API_BASELINE)], cwd=ROOT / "proto",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_namespace_package_init() -> None:
    for root in ("daemon", "client", "hardware", "proto"):
        assert not (ROOT / root / "src" / "pacsvault" / "__init__.py").exists(), root


def test_public_surfaces_are_sorted_and_importable() -> None:
    for module in (pacsvault.client, pacsvault.hardware):
        assert list(module.__all__) == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_reflection_lists_every_service(daemon: Daemon) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(daemon.target))
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"pacsvault.v1.ArchiveService", "pacsvault.v1.ApplianceService", "grpc.health.v1.Health"} <= names


def test_plaintext_off_loopback_is_refused(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--listen", "0.0.0.0:0",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "server.listen" in result.stderr and "loopback" in result.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nmax_wokers = 4\n")
    result = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--config", str(config), "--check-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown key server.max_wokers" in result.stderr
