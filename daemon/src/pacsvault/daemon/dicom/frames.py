"""Frames of an uncompressed instance: slices of its Pixel Data, as WADO-RS /frames gives them."""

from __future__ import annotations

import io
import warnings

import pydicom

from pacsvault.daemon.errors import DataLoss, NotFound

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
# Native (uncompressed) little-endian pixel data: a frame is a fixed-size slice of it.
UNCOMPRESSED = frozenset({IMPLICIT_LITTLE, EXPLICIT_LITTLE})


def extract(data: bytes, numbers: list[int], sop_uid: str) -> list[bytes]:
    """Frames ``numbers`` (from 1) of the Part 10 file ``data``; NotFound names a frame past the last."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data))
        pixels = dataset.get("PixelData")
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples, bits = int(dataset.get("SamplesPerPixel", 1)), int(dataset.BitsAllocated)
        count = int(dataset.get("NumberOfFrames", 1) or 1)
    except (pydicom.errors.InvalidDicomError, AttributeError, TypeError, ValueError, EOFError) as exc:
        raise NotFound(f"instance {sop_uid} has no pixel data to give as frames ({exc})") from exc
    if pixels is None:
        raise NotFound(f"instance {sop_uid} has no pixel data")
    if bits % 8:
        raise NotFound(f"instance {sop_uid} packs {bits}-bit pixels; frames are given for whole bytes only")
    size = rows * columns * samples * bits // 8
    value = pixels
    if len(value) < size * count:
        raise DataLoss(f"instance {sop_uid}: pixel data shorter than its {count} frames")
    for number in numbers:
        if number > count:
            raise NotFound(f"instance {sop_uid} has {count} frame(s); there is no frame {number}")
    return [bytes(value[(n - 1) * size: n * size]) for n in numbers]
