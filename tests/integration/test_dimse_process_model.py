"""The DICOM port is the daemon's, shared by its serving processes like the API port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

pytestmark = pytest.mark.slow


def test_associations_are_spread_over_the_workers_on_one_port(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory()  # two workers (PACSVAULT_TEST_WORKERS)
    ae = AE(ae_title="SPREAD")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", daemon.dicom_port, ae_title="PACSVAULT") for _ in range(16)]
    try:
        assert all(a.is_established for a in held)
        assert all(a.send_c_echo().Status == 0x0000 for a in held)
    finally:
        for assoc in held:
            assoc.release()
    workers = set(re.findall(r"\[(worker-\d+)\] pacsvault\.access: DICOM association from", daemon.log()))
    assert workers == {"worker-1", "worker-2"}


def test_a_second_daemon_cannot_take_the_dicom_port(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon = daemon_factory()
    done = subprocess.run([sys.executable, "-m", "pacsvault.daemon", "--listen", "127.0.0.1:0", "--data-dir",
                           str(tmp_path / "other"), "--metrics-listen", "127.0.0.1:0",
                           "--dicom-listen", f"127.0.0.1:{daemon.dicom_port}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "dicom.listen" in done.stderr and "cannot bind" in done.stderr
