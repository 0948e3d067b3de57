"""What a real daemon writes to its log: pydicom's complaints summarised per instance,
without values or file paths."""

from __future__ import annotations

import re

from tests.conftest import Daemon, dicom_bytes, identity

INSTANCE_NUMBER = b"\x20\x00\x13\x00IS\x02\x00"  # (0020,0013) IS, 2 bytes, explicit VR little endian
SERIES_NUMBER = b"\x20\x00\x11\x00IS\x02\x00"


def with_bad_numbers(n: int) -> tuple[bytes, str]:
    """A real file whose InstanceNumber and SeriesNumber are 'X7', which no IS can be."""
    ids = identity(n, root="1.2.826.0.1.3680043.10.79")
    data = dicom_bytes(**ids, InstanceNumber="12", SeriesNumber="34")
    for tag in (INSTANCE_NUMBER, SERIES_NUMBER):
        at = data.index(tag) + len(tag)
        data = data[:at] + b"X7" + data[at + 2:]
    return data, ids["SOPInstanceUID"]


def test_pydicom_complaints_are_one_line_per_instance_without_values_or_paths(daemon: Daemon) -> None:
    stored = []
    with daemon.client() as client:
        for n in range(3):
            data, sop_uid = with_bad_numbers(n)
            assert client.store(data).status == "stored"
            stored.append(sop_uid)
    log = daemon.log()
    for sop_uid in stored:
        lines = [line for line in log.splitlines() if sop_uid in line and "DICOM warning" in line]
        assert len(lines) == 1, (sop_uid, lines)
        assert re.search(rf"instance {re.escape(sop_uid)}: 2 DICOM warnings from pydicom: "
                         r"Invalid value for VR IS: \.\.\. \(x2\)$", lines[0]), lines[0]
    assert "X7" not in log and "UserWarning" not in log and ".py:" not in log, log[-3000:]
    assert "] pydicom: " not in log, "pydicom's own log lines reach the log unsummarised"
