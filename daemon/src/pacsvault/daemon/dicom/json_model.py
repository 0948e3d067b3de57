"""DICOM JSON (PS3.18 Annex F) of a stored instance, read without pixel data."""

from __future__ import annotations

import json
import warnings

import pydicom
from pydicom.dataelem import DataElement

from pacsvault.daemon.errors import DataLoss
from pacsvault.daemon.storage.blob_access import BlobFile, BlobReader

# Values above this many bytes are referenced, not inlined, as a WADO-RS
# metadata response does; the URI names the instance and the tag.
BULK_DATA_THRESHOLD = 64 * 1024


def instance_json(reader: BlobReader, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """One instance's DICOM JSON object; only the frames holding the header are read."""
    base = f"pacsvault://studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/"

    def bulk_uri(element: DataElement) -> str:
        return f"{base}{element.tag.group:04X}{element.tag.element:04X}"

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(BlobFile(reader), stop_before_pixels=True)
            model = dataset.to_json_dict(BULK_DATA_THRESHOLD, bulk_uri)
    except (pydicom.errors.InvalidDicomError, EOFError, ValueError) as exc:
        raise DataLoss(f"stored instance {sop_uid} no longer parses: {exc}") from exc
    return json.dumps(model, ensure_ascii=False, separators=(",", ":"))
