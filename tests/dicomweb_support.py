"""Talking to the DICOMweb door in tests the plain way (requests), to see the bytes on the wire."""

from __future__ import annotations

import io
import warnings

import pydicom
import requests


def multipart_parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart/related answer, split by its boundary as RFC 2046 says."""
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                    if p.strip().startswith("boundary="))
    body = response.content
    delimiter = b"--" + boundary.encode()
    assert body.rstrip().endswith(delimiter + b"--"), "the multipart body is not closed"
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers, data))
    return parts


def encoded(dataset: pydicom.Dataset) -> bytes:
    """The bytes dicomweb-client sends for a dataset (it writes each with pydicom.dcmwrite)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(out, dataset)
    return out.getvalue()


def parsed(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def stow_body(parts: list[bytes], boundary: str = "pv-test-boundary") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
