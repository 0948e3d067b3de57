"""Shared fixtures for the hardware-health tests."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hwdata"


@pytest.fixture
def fixtures() -> Path:
    """Root of the copied, licence-checked capture files."""
    return FIXTURES
