"""DICOM parsing: what is accepted, and the exact reason for what is not."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest

from pacsvault.daemon.dicom import parse as parse_module
from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import InvalidInput, NotDicom
from tests.conftest import pydicom_file


def _with(name: str, **changes: object) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(pydicom_file(name)))
        for keyword, value in changes.items():
            if value is None:
                delattr(dataset, keyword)
            else:
                setattr(dataset, keyword, value)
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm",
                                  "SC_rgb_jpeg.dcm", "emri_small_jpeg_2k_lossless.dcm", "rtdose.dcm"])
def test_real_files_parse(name: str) -> None:
    try:
        data = pydicom_file(name)
    except FileNotFoundError:
        pytest.skip(f"{name} is not in this pydicom")
    parsed = parse_module.parse(data)
    assert uid.is_valid(parsed.sop_instance_uid)
    assert parsed.transfer_syntax_uid


def test_identity_is_read_from_the_header() -> None:
    parsed = parse_module.parse(pydicom_file("CT_small.dcm"))
    assert parsed.patient_id == "1CT1"
    assert parsed.patient_name == "CompressedSamples^CT1"
    assert parsed.modality == "CT"
    assert parsed.study_date == "20040119"


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", NotDicom, "no 'DICM' prefix"),
        (b"hello world" * 100, NotDicom, "no 'DICM' prefix"),
        (b"\x00" * 128 + b"DICM" + b"\xff" * 10, InvalidInput, ""),
        (pydicom_file("CT_small.dcm")[:20000], InvalidInput, "truncated"),
        (pydicom_file("CT_small.dcm")[:1000], InvalidInput, ""),
        (pydicom_file("JPEG2000.dcm")[:-100], InvalidInput, "truncated"),
        # The RPC fuzzer's input: in the daemon pydicom raised BytesLengthException on its 1-byte
        # (0002,0000) UL (INTERNAL); here it stops earlier. test_fuzz_rpcs is the guard for that path.
        (b"\x00" * 128 + b"DICM\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00", InvalidInput, ""),
    ],
    ids=["empty", "text", "garbage after DICM", "cut in pixel data", "cut in header", "cut in encapsulated",
         "odd-length group length"],
)
def test_not_dicom_and_truncated(data: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_module.parse(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"SOPInstanceUID": None}, r"SOPInstanceUID \(0008,0018\) is missing"),
        ({"StudyInstanceUID": None}, r"StudyInstanceUID \(0020,000D\) is missing"),
        ({"SeriesInstanceUID": None}, r"SeriesInstanceUID \(0020,000E\) is missing"),
        ({"SOPInstanceUID": "1.2.03"}, "not a valid UID"),
        ({"StudyInstanceUID": "1.2.abc"}, "not a valid UID"),
        ({"SeriesInstanceUID": "1." + "2" * 70}, "at most 64"),
        ({"PatientID": "A\x01B"}, "control characters"),
        ({"PatientID": "P" * 65}, "at most 64"),
    ],
)
def test_bad_identity_is_named(changes: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_module.parse(_with("CT_small.dcm", **changes))


def test_uid_syntax() -> None:
    assert uid.is_valid("1.2.840.10008.1.2.1")
    assert uid.is_valid("0.0")
    for bad in ["", "1", "1..2", "1.02", "1.2.", ".1.2", "1.2a", "1.2 ", "1." + "1" * 64]:
        assert not uid.is_valid(bad), bad
