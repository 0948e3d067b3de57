"""Every way an operator types a certificate serial names the same revocation."""

from __future__ import annotations

import pytest

from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.security.serials import normalise_serial, serial_of, stored_forms


@pytest.mark.parametrize("typed", ["0A1B2C", "0a1b2c", "a1b2c", "A1B2C", "0a:1b:2c", "0A:1B:2C", "000a1b2c",
                                   "serial=0A1B2C", " 0a 1b 2c ", "0xA1B2C"])
def test_every_form_is_the_serial_of_the_certificate(typed: str) -> None:
    assert normalise_serial(typed) == serial_of(0xA1B2C) == "a1b2c"


def test_zero_and_the_legacy_padded_form() -> None:
    assert normalise_serial("00") == "0"
    assert stored_forms("a1b2c") == ("a1b2c", "0a1b2c")
    assert stored_forms("a1b2") == ("a1b2",)


@pytest.mark.parametrize("bad", ["", "   ", "xyz", "12G4", ":", "0x", "serial=", "1" * 65, "-1", "1.2"])
def test_a_bad_serial_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput, match="serial_hex"):
        normalise_serial(bad)
