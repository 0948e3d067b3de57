"""What a store leaves on disk: never a blob nobody names (a refused store), and never an
acknowledgement onto a rotten leftover at its blob's name (issue 15, defects 4 and 5)."""

from __future__ import annotations

from pathlib import Path

from pacsvault.daemon import config as config_module
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.daemon.digest import address_of
from pacsvault.daemon.storage.blob_sealer import BlobSealer
from tests.conftest import Daemon, dicom_bytes, identity

ROOT = "1.2.826.0.1.3680043.10.151"


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.glob("tiers/*/blobs/**/*") if p.is_file())


def blob_path(daemon: Daemon, data: bytes) -> Path:
    """Where the daemon puts the blob of ``data`` on the hot tier (its keyed address)."""
    keys = open_keys(config_module.Config(data_dir=str(daemon.data_dir)))
    assert keys is not None
    digest = address_of(data, BlobSealer(keys).address_key)
    return daemon.data_dir / "tiers" / "hot" / "blobs" / "blake3" / digest.hex[:2] / digest.hex[2:4] / digest.hex


def test_a_store_refused_for_a_patient_conflict_leaves_no_blob(daemon: Daemon) -> None:
    first = dicom_bytes(PatientID="LEFT-1", **identity(1, ROOT))
    # Same study, another patient: refused once the index sees the study belongs to LEFT-1.
    ids = identity(1, ROOT) | {"SOPInstanceUID": f"{ROOT}.1.1.2", "SeriesInstanceUID": f"{ROOT}.1.2"}
    other_patient = dicom_bytes(PatientID="LEFT-2", **ids)
    with daemon.client() as client:
        assert client.store(first).ok
        before = blob_files(daemon.data_dir)
        for _ in range(3):
            refused = client.store(other_patient)
            assert (refused.status, refused.code) == ("rejected", "INVALID_ARGUMENT"), refused
    assert blob_files(daemon.data_dir) == before, "a refused store left its blob behind"


def test_a_rotten_leftover_at_a_new_blobs_name_is_replaced_by_the_store(daemon: Daemon) -> None:
    data = dicom_bytes(PatientID="LEFT-3", **identity(2, ROOT))
    leftover = blob_path(daemon, data)
    # A crash after the rename but before the index commit, then rot: a file at the name, no record naming it.
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"PVBL" + bytes(4000))
    with daemon.client() as client:
        assert client.store(data).status == "stored"
        assert client.get_instance(f"{ROOT}.2.1.1") == data
    daemon.stop()
    daemon.start()  # and from the disk, not a cache
    with daemon.client() as client:
        assert client.get_instance(f"{ROOT}.2.1.1") == data
