"""Bad input at the DIMSE door: refused with a reason, nothing stored half, the daemon keeps serving.

Malformed PDUs come as raw bytes on a socket; a well-formed association
whose P-DATA is garbage comes from pynetdicom; unknown SOP classes, copies
that contradict what is stored and oversized data sets come from dcmtk's
storescu; idle connections and associations are simply left alone.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.dicom.part10 import data_set
from tests import dcmtk
from tests.conftest import Daemon, dicom_bytes, identity

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pv.toml"
    path.write_text(text)
    return path


def _still_serving(daemon: Daemon) -> None:
    done = dcmtk.run("echoscu", "-aec", "PACSVAULT", "127.0.0.1", str(daemon.dicom_port))
    assert done.returncode == 0, done.stderr
    assert daemon.alive


def _stored(daemon: Daemon) -> set[str]:
    with PacsvaultClient(daemon.target) as client:
        return {m.instance.sop_instance_uid for m in client.find("instance")}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _answer_to(raw: bytes, port: int, wait_s: float = 10.0) -> bytes:
    """What the daemon sends back before closing the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(raw)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return got


def test_malformed_pdus_are_answered_with_an_abort_and_the_daemon_keeps_serving(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    daemon = daemon_factory()
    # Not DICOM at all (an HTTP request): PDU type 0x47 is unknown.
    answer = _answer_to(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", daemon.dicom_port)
    assert answer[:1] in (b"\x07", b""), answer  # A-ABORT, or the connection closed
    # An A-ASSOCIATE-RQ claiming 4 GiB: never read, the connection is closed.
    assert _answer_to(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0) + b"\x00" * 64, daemon.dicom_port)[:1] in (b"\x07", b"")
    # An A-ASSOCIATE-RQ whose items are garbage.
    answer = _answer_to(struct.pack(">BBL", 0x01, 0, 80) + b"\x00\x01\x00\x00" + b"\xff" * 76, daemon.dicom_port)
    assert answer[:1] in (b"\x03", b"\x07", b""), answer  # rejected or aborted
    # A real association, then a P-DATA-TF PDU that holds no valid DIMSE message.
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="PACSVAULT")
    assert assoc.is_established
    assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, 12) + struct.pack(">LB", 8, 1) + b"\x03garbag")
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    _still_serving(daemon)
    assert _stored(daemon) == set()


def test_an_unknown_sop_class_is_refused_at_negotiation(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    daemon = daemon_factory()
    private = "1.2.826.0.1.3680043.10.77.999.1"
    path = _write(tmp_path, "private.dcm", dicom_bytes(SOPClassUID=private, **identity(1)))
    done = dcmtk.store(daemon.dicom_port, [path], tmp_path)
    assert done.returncode != 0
    assert "no acceptable presentation contexts" in (done.stdout + done.stderr).lower()
    # pynetdicom, asked directly: the context is rejected, "abstract syntax not supported" (result 3).
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(private)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="PACSVAULT")
    assert [cx.result for cx in assoc.rejected_contexts] == [0x03]
    assoc.release()
    _still_serving(daemon)
    assert _stored(daemon) == set()


def test_the_same_uid_with_other_bytes_is_refused_with_the_reason(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    daemon = daemon_factory()
    first = _write(tmp_path, "first.dcm", dicom_bytes(PatientName="First^Version", **identity(2)))
    second = _write(tmp_path, "second.dcm", dicom_bytes(PatientName="Second^Version", **identity(2)))
    assert dcmtk.store(daemon.dicom_port, [first], tmp_path).returncode == 0
    with PacsvaultClient(daemon.target) as client:
        kept = client.get_instance(identity(2)["SOPInstanceUID"])
    done = dcmtk.store(daemon.dicom_port, [second], tmp_path, extra=("-d",))
    output = done.stdout + done.stderr
    assert "0x0111" in output.lower() or "0111" in output, output[-2000:]
    assert "stored with other bytes; kept" in output
    with PacsvaultClient(daemon.target) as client:
        assert client.get_instance(identity(2)["SOPInstanceUID"]) == kept
    _still_serving(daemon)


def test_an_oversized_data_set_ends_its_association_and_nothing_is_stored(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    small = dicom_bytes("MR_small.dcm", **identity(3))
    large = dicom_bytes("CT_small.dcm", **identity(4))
    assert len(small) < 20_000 < len(large) - 2_000
    daemon = daemon_factory(config=_config(tmp_path, "[limits]\nmax_instance_bytes = 20000\n"))
    done = dcmtk.store(daemon.dicom_port, [_write(tmp_path, "large.dcm", large)], tmp_path)
    assert done.returncode != 0
    assert "limits.max_instance_bytes" in daemon.log()
    assert _stored(daemon) == set()
    assert dcmtk.store(daemon.dicom_port, [_write(tmp_path, "small.dcm", small)], tmp_path).returncode == 0
    assert _stored(daemon) == {identity(3)["SOPInstanceUID"]}


def test_a_data_set_just_over_the_limit_gets_out_of_resources_with_the_reason(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Under the limit as a data set, over it as a Part 10 file (its File Meta Information added): the
    whole request arrives, and the answer is a status that says why."""
    dcmtk.require_dcmtk()
    data = dicom_bytes("MR_small.dcm", **identity(5))
    limit = len(data_set(data))  # storescu sends at most this; the file pacsvault makes is ~330 bytes more
    daemon = daemon_factory(config=_config(tmp_path, f"[limits]\nmax_instance_bytes = {limit}\n"))
    done = dcmtk.store(daemon.dicom_port, [_write(tmp_path, "over.dcm", data)], tmp_path, extra=("-d",))
    output = done.stdout + done.stderr
    assert "0xa700" in output.lower(), output[-2000:]
    assert "limits.max_instance_bytes" in output
    assert _stored(daemon) == set()
    _still_serving(daemon)


def test_idle_connections_and_associations_are_closed(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    daemon = daemon_factory(config=_config(tmp_path, "[dicom]\nidle_timeout_s = 2.0\n"))
    # A connection that never asks for an association.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", daemon.dicom_port), timeout=20) as sock:
        try:
            assert sock.recv(1024) in (b"",) or True
        except ConnectionResetError:
            pass
    assert time.monotonic() - started < 10
    # An association that goes quiet.
    ae = AE(ae_title="SLEEPY")
    ae.add_requested_context(Verification)
    ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="PACSVAULT")
    assert assoc.is_established
    deadline = time.monotonic() + 15
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert assoc.is_aborted
    _still_serving(daemon)
