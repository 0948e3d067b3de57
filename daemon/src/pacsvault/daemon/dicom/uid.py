"""DICOM UID syntax (PS3.5 9.1): digits and dots, no leading zeros, at most 64 chars."""

from __future__ import annotations

import re

from pacsvault.daemon.errors import InvalidInput

MAX_UID_LENGTH = 64
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def is_valid(uid: str) -> bool:
    return len(uid) <= MAX_UID_LENGTH and _UID.fullmatch(uid) is not None


def check(uid: str, field: str) -> str:
    """Returns ``uid`` or raises InvalidInput naming ``field`` and the defect."""
    if not uid:
        raise InvalidInput(f"{field} is missing")
    if len(uid) > MAX_UID_LENGTH:
        raise InvalidInput(f"{field} is {len(uid)} characters long; a UID has at most {MAX_UID_LENGTH}")
    if _UID.fullmatch(uid) is None:
        shown = uid.encode("unicode_escape").decode("ascii")[:80]
        raise InvalidInput(
            f"{field} {shown!r} is not a valid UID (digits in dot-separated components, "
            "no leading zeros)"
        )
    return uid
