"""The client's public surface: what it exports, its exception tree, the asyncio twin's parity,
and its types as mypy --strict sees them (this is the CI check of the client's typing)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

import pacsvault.client as client_module
from pacsvault.client import (
    AsyncPacsvaultClient,
    Cancelled,
    Conflict,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    PacsvaultClient,
    PacsvaultError,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from pacsvault.client._errors import error_for_code

REPO = Path(__file__).resolve().parents[2]


def test_the_exported_names_are_sorted_and_each_is_there() -> None:
    assert client_module.__all__ == sorted(client_module.__all__)
    assert len(set(client_module.__all__)) == len(client_module.__all__)
    for name in client_module.__all__:
        assert getattr(client_module, name) is not None, name
    # Every public exception class of the package is exported, and nothing private is.
    errors = {name for name, value in vars(client_module).items()
              if inspect.isclass(value) and issubclass(value, PacsvaultError)}
    assert errors <= set(client_module.__all__)
    assert not [name for name in client_module.__all__ if name.startswith("_")]
    assert {"PacsvaultClient", "AsyncPacsvaultClient", "StoreResult", "SavedInstance", "InstanceMetadata",
            "RetryPolicy", "to_dataset", "match_to_keywords"} <= set(client_module.__all__)


EXPECTED_CLASS = {
    "INVALID_ARGUMENT": InvalidInput, "OUT_OF_RANGE": InvalidInput, "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": Conflict, "ABORTED": Conflict, "FAILED_PRECONDITION": FailedPrecondition,
    "PERMISSION_DENIED": PermissionDenied, "UNAUTHENTICATED": Unauthenticated, "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded, "RESOURCE_EXHAUSTED": ResourceExhausted, "DATA_LOSS": DataLoss,
    "CANCELLED": Cancelled, "INTERNAL": ServerError, "UNKNOWN": ServerError, "UNIMPLEMENTED": ServerError,
}


@pytest.mark.parametrize("status", [c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_status_code_has_exactly_one_place_in_the_tree(status: str) -> None:
    error = error_for_code(status, "words")
    assert type(error) is EXPECTED_CLASS[status]
    assert isinstance(error, PacsvaultError) and isinstance(error, grpc.RpcError)
    assert (error.code(), error.details(), str(error)) == (grpc.StatusCode[status], "words", "words")


def test_the_tree_nests_where_a_caller_would_catch_together() -> None:
    assert issubclass(Unauthenticated, PermissionDenied) and issubclass(DeadlineExceeded, Unavailable)
    assert IntegrityError("x").code() == grpc.StatusCode.DATA_LOSS and not issubclass(IntegrityError, DataLoss)
    for kind in EXPECTED_CLASS.values():
        assert kind.__doc__, kind


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    """Its own and its mixins' (``_lifecycle``) public methods."""
    return {name: inspect.signature(value) for name, value in inspect.getmembers(cls, callable)
            if not name.startswith("_")}


def test_the_asyncio_client_has_the_same_surface() -> None:
    blocking, asynchronous = _public_methods(PacsvaultClient), _public_methods(AsyncPacsvaultClient)
    assert set(blocking) == set(asynchronous)
    for name, signature in blocking.items():
        theirs = asynchronous[name]
        assert [(p.name, p.kind, p.default) for p in signature.parameters.values()] == [
            (p.name, p.kind, p.default) for p in theirs.parameters.values()], name
    assert inspect.signature(PacsvaultClient.__init__) == inspect.signature(AsyncPacsvaultClient.__init__)


def test_find_filters_are_typed_a_typo_is_a_type_error() -> None:
    with PacsvaultClient("127.0.0.1:1") as client:
        with pytest.raises(TypeError, match="patient_idd"):
            client.find("study", patient_idd="MRN-1")  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            client.find("study", "MRN-1")  # type: ignore[misc]


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mypy_strict_is_clean_on_the_client_package() -> None:
    result = mypy()  # [tool.mypy]: strict, files = the client package
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found")


@pytest.mark.slow
def test_an_integrators_code_gets_real_types_and_typos_are_caught(tmp_path: Path) -> None:
    program = tmp_path / "integration.py"
    program.write_text(textwrap.dedent("""
        import pydicom
        from pacsvault.client import AsyncPacsvaultClient, NotFound, PacsvaultClient

        def blocking(archive: PacsvaultClient) -> None:
            data: bytes = archive.get_instance("1.2.3")
            dataset: pydicom.Dataset = archive.get_instance("1.2.3", as_dataset=True)
            for match in archive.find("study", patient_id="MRN-1", study_date="20240101-"):
                reveal_type(match.study.number_of_study_related_instances)
            try:
                archive.save_study("1.2.3", "out")
            except NotFound as error:
                reveal_type(error.code())
            archive.find("study", patient_idd="MRN-1")
            archive.find("studies")

        async def asynchronous(archive: AsyncPacsvaultClient) -> None:
            data: bytes = await archive.get_instance("1.2.3")
            async for match in archive.find("instance", modality="CT"):
                reveal_type(match.instance.tier)
    """))
    result = mypy("--strict", str(program))
    revealed = [line.split('Revealed type is "')[1].rstrip('"').removeprefix("builtins.")
                for line in result.stdout.splitlines() if "Revealed type is" in line]
    assert revealed == ["int", "grpc.StatusCode", "str"], result.stdout
    errors = [line.split("error: ")[1] for line in result.stdout.splitlines() if "error: " in line]
    assert len(errors) == 2, result.stdout
    assert errors[0].startswith('Unexpected keyword argument "patient_idd" for "find" of "PacsvaultClient"')
    assert errors[1].startswith('Argument 1 to "find" of "PacsvaultClient" has incompatible type '
                                '"Literal[\'studies\']"')
