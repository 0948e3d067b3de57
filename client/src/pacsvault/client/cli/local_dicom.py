"""What ``store`` learns from a file before (or instead of) sending it.

A patient CD holds more than images: a DICOMDIR (the media's index), a
README, a viewer, sometimes the same image in two transfer syntaxes. Those
are noted, not refused.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID

from pacsvault.client import PacsvaultClient, PacsvaultError

MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR (PS3.10)
_MEDIA_SOP_CLASS = b"\x02\x00\x02\x00UI"  # (0002,0002) MediaStorageSOPClassUID, explicit VR little endian


def skip_reason(path: Path, data: bytes) -> str | None:
    """Why this file is not an instance to store, or None when it is (or may be) one."""
    if path.name.upper() == "DICOMDIR":
        return "a DICOMDIR (the index of a DICOM medium, not an image)"
    if len(data) < 132 or data[128:132] != b"DICM":
        return "not a DICOM file (no DICM prefix at byte 128)"
    if _media_sop_class(data) == MEDIA_DIRECTORY_STORAGE:
        return "a DICOMDIR (the index of a DICOM medium, not an image)"
    return None


def _media_sop_class(data: bytes) -> str:
    """(0002,0002) read straight from the file meta group, which is always explicit VR little endian."""
    at = data.find(_MEDIA_SOP_CLASS, 132, 132 + 512)
    if at < 0:
        return ""
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    return data[at + 8 : at + 8 + length].rstrip(b"\0 ").decode("ascii", "replace")


@dataclass(frozen=True)
class Identity:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def identity_of(data: bytes) -> Identity | None:
    """The UIDs and transfer syntax of a Part 10 file (header only), None when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=[
                "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
        return Identity(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID),
                        str(dataset.SOPInstanceUID), str(dataset.file_meta.TransferSyntaxUID))
    except Exception:  # noqa: BLE001 - any unreadable header just means "cannot explain"
        return None


def syntax_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else f"transfer syntax {uid}"


class StoredSyntaxes:
    """The transfer syntax each stored instance was kept in, looked up one series at a time."""

    def __init__(self, client: PacsvaultClient) -> None:
        self._client = client
        self._series: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def of(self, identity: Identity) -> str | None:
        """The stored instance's transfer syntax UID, None when it cannot be found or asked for."""
        with self._lock:
            known = self._series.get(identity.series_instance_uid, {})
            if identity.sop_instance_uid not in known:
                try:
                    known = {m.instance.sop_instance_uid: m.instance.transfer_syntax_uid for m in self._client.find(
                        "instance", study_instance_uid=identity.study_instance_uid,
                        series_instance_uid=identity.series_instance_uid)}
                except PacsvaultError:  # e.g. an ingest-only principal may not search
                    return None
                self._series[identity.series_instance_uid] = known
            return known.get(identity.sop_instance_uid)


def other_encoding(data: bytes, stored: StoredSyntaxes) -> tuple[str, str] | None:
    """For an ALREADY_EXISTS answer: (SOP Instance UID, words) when the same instance is stored
    in another transfer syntax (a duplicate, not a conflict), else None."""
    identity = identity_of(data)
    if identity is None:
        return None
    kept = stored.of(identity)
    if kept is None or kept == identity.transfer_syntax_uid:
        return None
    return identity.sop_instance_uid, (f"already stored in {syntax_name(kept)}; this copy is "
                                       f"{syntax_name(identity.transfer_syntax_uid)} and was not stored")
