"""Storage Commitment Push Model against a real daemon, with pynetdicom as the modality.

dcmtk has no Storage Commitment SCU; pynetdicom's is as independent of this
code. The report comes on the requester's association while it stays open,
and on a new association, to the destination named like the requester's AE
title, once it has closed (from the back office, so from another process
than the one that took the request).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from pacsvault.daemon.dimse.commitment import WELL_KNOWN_INSTANCE
from tests import dcmtk
from tests.conftest import dicom_bytes, identity
from tests.ports import free_port

pytestmark = pytest.mark.slow
CT = "1.2.840.10008.5.1.4.1.1.2"
UNKNOWN_SOP = "1.2.826.0.1.3680043.10.77.404.1"


class Reports:
    """N-EVENT-REPORTs a modality received."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event) -> tuple[int, None]:  # type: ignore[no-untyped-def]
        self.received.append((event.event_type, event.event_information))
        self.arrived.set()
        return 0x0000, None


def _store_three(daemon, tmp_path: Path) -> list[str]:  # type: ignore[no-untyped-def]
    paths = []
    for n in (1, 2, 3):
        paths.append(tmp_path / f"{n}.dcm")
        paths[-1].write_bytes(dicom_bytes(**identity(n)))
    assert dcmtk.store(daemon.dicom_port, paths, tmp_path).returncode == 0
    return [identity(n)["SOPInstanceUID"] for n in (1, 2, 3)]


def _request(sops: list[str], transaction_uid: str) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop in sops:
        item = Dataset()
        item.ReferencedSOPClassUID = CT
        item.ReferencedSOPInstanceUID = sop
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _check(report: tuple[int, Dataset], transaction_uid: str, committed: list[str]) -> None:
    event_type, info = report
    assert event_type == 2  # some failed: the unknown one
    assert info.TransactionUID == transaction_uid
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(committed)
    (failed,) = info.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == UNKNOWN_SOP and failed.FailureReason == 0x0112


def test_the_report_comes_on_the_same_association(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    daemon = daemon_factory()
    stored = _store_three(daemon, tmp_path)
    reports = Reports()
    ae = AE(ae_title="CT_ROOM")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="PACSVAULT",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    assert assoc.is_established
    status, _ = assoc.send_n_action(_request([*stored, UNKNOWN_SOP], "1.2.826.0.1.3680043.10.77.900.1"), 1,
                                    StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    assert status.Status == 0x0000
    assert reports.arrived.wait(15), daemon.log()[-3000:]
    assoc.release()
    _check(reports.received[0], "1.2.826.0.1.3680043.10.77.900.1", stored)


def test_the_report_comes_on_a_new_association_once_the_requester_left(daemon_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dcmtk.require_dcmtk()
    reports = Reports()
    modality = AE(ae_title="CT_ROOM")
    # The report arrives with pacsvault as the association's requestor in the SCP role.
    modality.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    port = free_port()
    scp = modality.start_server(("127.0.0.1", port), block=False,
                                evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    try:
        config = tmp_path / "pv.toml"
        config.write_text(f'[dicom]\ndestinations = [{{ name = "CT_ROOM", host = "127.0.0.1", port = {port} }}]\n')
        daemon = daemon_factory(config=config)
        stored = _store_three(daemon, tmp_path)
        ae = AE(ae_title="CT_ROOM")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title="PACSVAULT")
        status, _ = assoc.send_n_action(_request([*stored[:2], UNKNOWN_SOP], "1.2.826.0.1.3680043.10.77.900.2"), 1,
                                        StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0000
        assoc.release()  # at once, as many modalities do
        started = time.monotonic()
        assert reports.arrived.wait(30), daemon.log()[-3000:]
        assert time.monotonic() - started < 10  # the back office looks every second
        _check(reports.received[0], "1.2.826.0.1.3680043.10.77.900.2", stored[:2])
        deadline = time.monotonic() + 10
        while "reported to CT_ROOM: acknowledged" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.1)  # the daemon logs once our answer reached it
        assert "reported to CT_ROOM: acknowledged" in daemon.log()
    finally:
        scp.shutdown()
