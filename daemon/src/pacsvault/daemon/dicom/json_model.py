"""DICOM JSON (PS3.18 Annex F) of a stored instance, read without pixel data."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import pydicom
from pydicom.dataelem import DataElement

from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage.blob_access import BlobFile, BlobReader

# Values above this many bytes are referenced, not inlined, as a WADO-RS
# metadata response does; the URI names the instance and the tag.
BULK_DATA_THRESHOLD = 64 * 1024


# Where BulkDataURIs point when no door says: the gRPC API has no bulk data route.
PACSVAULT_ROOT = "pacsvault:/"


def instance_json(reader: BlobReader, study_uid: str, series_uid: str, sop_uid: str,
                  root: str = PACSVAULT_ROOT) -> str:
    """One instance's DICOM JSON object; only the frames holding the header are read.

    ``root``: where the BulkDataURIs point (the DICOMweb door's base URL, so they
    resolve). Each names its element by its place in the header walk (``bulk_values``
    finds it again), so elements nested in sequences resolve too.
    """
    base = f"{root}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/"
    counter = iter(range(1, 1 << 30))
    model = _walk(reader, sop_uid, lambda element: f"{base}{next(counter)}")
    return json.dumps(model, ensure_ascii=False, separators=(",", ":"))


def bulk_value(reader: BlobReader, sop_uid: str, number: int) -> bytes | None:
    """The value a BulkDataURI ending in ``number`` names (as ``instance_json`` made it); None if none."""
    found: list[bytes] = []
    counter = iter(range(1, 1 << 30))

    def keep(element: DataElement) -> str:
        if next(counter) == number:
            value = element.value
            found.append(value if isinstance(value, bytes) else bytes(value))
        return ""

    _walk(reader, sop_uid, keep)
    return found[0] if found else None


def _walk(reader: BlobReader, sop_uid: str, bulk: Callable[[DataElement], str]) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(BlobFile(reader), stop_before_pixels=True)
            return dataset.to_json_dict(BULK_DATA_THRESHOLD, bulk)
    except (pydicom.errors.InvalidDicomError, EOFError, ValueError) as exc:
        raise DataLoss(f"stored instance {sop_uid} no longer parses: {exc}") from exc
