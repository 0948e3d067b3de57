"""Certificate serial numbers in one canonical form, so a revocation matches however it was typed.

Operators copy serials from ``openssl x509 -serial`` (upper case, padded to
whole bytes: ``serial=0A1B...``), from browsers and ``openssl x509 -text``
(``0a:1b:...``) or from Python (``format(n, "x")``). All of them name the
same integer; the canonical form is that integer in lower-case hex without
leading zeros, which is what a presented certificate is reduced to as well.
"""

from __future__ import annotations

import string

from pacsvault.daemon.errors import InvalidInput, shown

# RFC 5280 allows 20 octets; some CAs exceed it a little, none by this much.
_MAX_HEX_DIGITS = 64
_SEPARATORS = str.maketrans("", "", ": \t")


def normalise_serial(text: str) -> str:
    """``text`` as canonical hex; InvalidInput naming serial_hex when it is not a serial number."""
    digits = text.strip()
    if digits.lower().startswith("serial="):  # pasted straight from openssl x509 -serial
        digits = digits[len("serial="):]
    digits = digits.translate(_SEPARATORS)
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if not digits or any(c not in string.hexdigits for c in digits):
        raise InvalidInput(f"serial_hex {shown(text)} is not a hexadecimal serial number "
                           "(as openssl x509 -serial prints it; colons allowed)")
    canonical = digits.lower().lstrip("0") or "0"
    if len(canonical) > _MAX_HEX_DIGITS:
        raise InvalidInput(f"serial_hex has {len(canonical)} hex digits; a certificate serial has at most "
                           f"{_MAX_HEX_DIGITS}")
    return canonical


def serial_of(number: int) -> str:
    """A certificate's serial number in canonical form."""
    return format(number, "x")


def stored_forms(canonical: str) -> tuple[str, ...]:
    """The forms a revocation of this serial may be stored under.

    Before serials were normalised they were kept as typed, lower-cased; the
    usual form was openssl's, padded to whole bytes. Looking that one up too
    makes those older revocations take effect.
    """
    padded = canonical.rjust(len(canonical) + len(canonical) % 2, "0")
    return (canonical,) if padded == canonical else (canonical, padded)
