"""HTTP media types: reading Accept and Content-Type, writing multipart/related (RFC 2387).

DICOMweb puts its choices in media type parameters (``type``,
``transfer-syntax``, ``boundary``), often quoted, so a header is split on
commas and semicolons outside quotes only.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from pacsvault.daemon.errors import PacsvaultError


class NotAcceptable(PacsvaultError):
    """No media type the caller accepts can be given (HTTP 406)."""


class UnsupportedMediaType(PacsvaultError):
    """The request body's media type is not one this resource takes (HTTP 415)."""


@dataclass(frozen=True)
class MediaRange:
    type: str  # "multipart/related", "application/dicom+json", "*/*" ...
    params: dict[str, str] = field(default_factory=dict)

    def matches(self, media_type: str) -> bool:
        main, _, sub = media_type.partition("/")
        want_main, _, want_sub = self.type.partition("/")
        return want_main in ("*", main) and want_sub in ("*", sub)


def _split(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_media_type(value: str) -> MediaRange:
    first, *rest = _split(value, ";") or [""]
    params = {}
    for item in rest:
        name, _, raw = item.partition("=")
        params[name.strip().lower()] = raw.strip().strip('"')
    return MediaRange(first.lower(), params)


def accepted(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header in the caller's order (q=0 left out); ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(part) for part in _split(header, ",")]
    return [r for r in ranges if r.params.get("q", "1").strip() not in ("0", "0.0", "0.00", "0.000")]


def multipart_choice(header: str | None, part_type: str, what: str) -> MediaRange:
    """The caller's acceptable range for a multipart/related answer of ``part_type`` parts.

    ``*/*`` and ``multipart/related`` without a type take the resource's own
    part type; NotAcceptable names what can be given when nothing fits.
    """
    for choice in accepted(header):
        if choice.type in ("*/*", "multipart/*"):
            return MediaRange("multipart/related", {"type": part_type})
        if choice.type == "multipart/related" and \
                MediaRange(choice.params.get("type", part_type).lower()).matches(part_type):
            return choice
    raise NotAcceptable(f"{what} is given as multipart/related; type=\"{part_type}\" only; "
                        f"the Accept header asks for {header!r}")


def json_choice(header: str | None, what: str) -> str:
    """``application/dicom+json`` when the caller accepts it (or plain JSON); NotAcceptable otherwise."""
    for choice in accepted(header):
        if choice.matches("application/dicom+json") or choice.type == "application/json":
            return "application/dicom+json"
    raise NotAcceptable(f"{what} is given as application/dicom+json only; the Accept header asks for {header!r}")


class Multipart:
    """The framing of one multipart/related answer; parts are written by the caller, streamed."""

    def __init__(self, part_type: str) -> None:
        self.boundary = secrets.token_hex(16)
        self.content_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'

    def head(self, content_type: str, length: int, location: str = "") -> bytes:
        lines = [f"--{self.boundary}", f"Content-Type: {content_type}", f"Content-Length: {length}"]
        if location:
            lines.append(f"Content-Location: {location}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()


def dumps(value: object) -> bytes:
    """A DICOM JSON body: UTF-8, compact."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
