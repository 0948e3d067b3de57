"""Every client method answers a refusal with a member of the exception tree, never a raw RpcError;
bytes that fail their digest never reach the caller or a file's final name."""

from __future__ import annotations

import io
import time
from pathlib import Path

import blake3
import grpc
import pydicom
import pytest

from pacsvault.client import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    PacsvaultClient,
    PacsvaultError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from pacsvault.client._files import InstanceFiles, in_folder
from pacsvault.client._messages import InstanceAssembler
from pacsvault.v1 import archive_pb2, common_pb2
from tests.conftest import Daemon, dicom_bytes, identity


def raised(call) -> PacsvaultError:  # type: ignore[no-untyped-def]
    """The exception a call raises, iterating a returned iterator; it must be one of ours."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if hasattr(result, "__next__") or isinstance(result, list):
            list(result)
    assert isinstance(info.value, PacsvaultError), f"a raw {type(info.value).__name__} escaped"
    assert info.value.__cause__ is not None or isinstance(info.value, IntegrityError)
    return info.value


def test_unknown_uids_are_not_found_in_every_read(daemon: Daemon, tmp_path: Path) -> None:
    tmp_path = tmp_path / "downloads"
    tmp_path.mkdir()
    with daemon.client() as client:
        for call in (lambda: client.get_instance("1.2.3.404"), lambda: client.iter_study("1.2.3.404"),
                     lambda: client.iter_series("1.2.3.404"), lambda: client.study_metadata("1.2.3.404"),
                     lambda: client.study_metadata_items("1.2.3.404"),
                     lambda: client.save_study("1.2.3.404", tmp_path / "never"),
                     lambda: client.save_series("1.2.3.404", tmp_path / "never"),
                     lambda: client.save_instance("1.2.3.404", tmp_path / "never.dcm"),
                     lambda: client.pin("1.2.3.404", "20991231"), lambda: client.revoke_share("nope")):
            error = raised(call)
            assert type(error) is NotFound and error.code() == grpc.StatusCode.NOT_FOUND, error
    assert not list(tmp_path.iterdir()), "nothing is created for an unknown UID"


def test_bad_input_conflict_and_credentials_map_to_their_classes(daemon: Daemon) -> None:
    with daemon.client() as client:
        error = raised(lambda: client.find("study", study_date="2024-13-99"))
        assert type(error) is InvalidInput and "date" in error.details()
        assert type(raised(lambda: client.drain_volume("/no/such/volume"))) is InvalidInput
        assert client.store(dicom_bytes(**identity(1))).status == "stored"
        assert type(raised(lambda: client.pin(identity(1)["StudyInstanceUID"], "31/12/2099"))) is InvalidInput
        refused = client.store(dicom_bytes(PatientID="OTHER", **identity(1)))
        assert (refused.status, refused.code) == ("rejected", "ALREADY_EXISTS")
        assert isinstance(refused.error(), Conflict) and client.store(dicom_bytes(**identity(1))).error() is None
    with PacsvaultClient(daemon.target, token="pv_" + "A" * 43) as forger:
        error = raised(lambda: forger.get_instance(identity(1)["SOPInstanceUID"]))
        assert type(error) is Unauthenticated and isinstance(error, PermissionDenied)
        assert type(raised(lambda: list(forger.find("study")))) is Unauthenticated


def test_an_unreachable_appliance_is_unavailable_quickly_without_retries(tmp_path: Path) -> None:
    with PacsvaultClient("127.0.0.1:1", retry=None, timeout=5) as client:
        started = time.monotonic()
        error = raised(lambda: client.health())
        assert type(error) is Unavailable and time.monotonic() - started < 3
        assert type(raised(lambda: client.get_instance("1.2.3"))) is Unavailable
        result = client.store(dicom_bytes(**identity(1)))
        assert (result.status, result.code) == ("rejected", "UNAVAILABLE")


def _messages(data: bytes, digest_of: bytes) -> list[archive_pb2.GetStudyResponse]:
    """How the appliance frames one instance: attributes (with the digest) on the first chunk."""
    attributes = common_pb2.InstanceAttributes(
        sop_instance_uid=identity(1)["SOPInstanceUID"],
        digest=common_pb2.Digest(function=common_pb2.DIGEST_FUNCTION_BLAKE3,
                                 hash=blake3.blake3(digest_of).hexdigest(), size_bytes=len(digest_of)))
    half = len(data) // 2
    return [archive_pb2.GetStudyResponse(instance=attributes, data=data[:half]),
            archive_pb2.GetStudyResponse(data=data[half:])]


def test_bytes_that_fail_their_digest_are_never_handed_over(tmp_path: Path) -> None:
    good = dicom_bytes(**identity(1))
    flipped = bytearray(good)
    flipped[-100] ^= 0x01  # one bit in the pixel data
    assembler = InstanceAssembler()
    for message in _messages(good, good):
        assert assembler.feed(message) is None
    attributes, data = assembler.finish()  # type: ignore[misc]
    assert data == good and attributes.sop_instance_uid == identity(1)["SOPInstanceUID"]
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == identity(1)["SOPInstanceUID"]
    assembler = InstanceAssembler()
    for message in _messages(bytes(flipped), good):
        assembler.feed(message)
    with pytest.raises(IntegrityError, match="received bytes fail their digest"):
        assembler.finish()
    files = InstanceFiles(in_folder(tmp_path / "out"))
    for message in _messages(bytes(flipped), good):
        files.feed(message)
    with pytest.raises(IntegrityError):
        files.finish()
    assert list((tmp_path / "out").iterdir()) == [], "no file, and no .part, is left"
