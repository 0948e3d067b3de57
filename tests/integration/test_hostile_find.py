"""A hostile Find costs no more than an honest one: wildcard patterns are
matched without backtracking, so no pattern a caller (a share holder
included) can send stalls the daemon or the calls of others."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pacsvault.v1 import archive_pb2, archive_pb2_grpc
from tests.conftest import Daemon, dicom_bytes, identity

NAMES = ["Doe^John", "Doe^Jane", "Müller^Anna", "Smith^Robert Allen", "Aaaaaaaaaaaaaaaaaaaaaaaa^Bbbbbbbbbbbbbb"]

# Patterns that made the old regex (wildcards as .*) backtrack exponentially, and the names they match.
HOSTILE = {
    "the issue's": ("************!", set()),
    "299 stars then a miss": ("*" * 299 + "!", set()),
    "star and one char, 150 times": ("*?" * 150, set()),
    "star and a letter, 150 times": ("a*" * 150, set()),
    "stars around every letter of a near-name": ("*" + "*".join("doe^johnx") + "*" * (300 - 18), set()),
    "298 stars, then a hit": ("*" * 298 + "?n", {"Doe^John", "Smith^Robert Allen"}),
}


@pytest.fixture
def archive(daemon: Daemon) -> Daemon:
    with daemon.client() as client:
        for n, name in enumerate(NAMES):
            assert client.store(dicom_bytes(PatientID=f"HF-{n}", PatientName=name, **identity(n))).status == "stored"
    return daemon


def find_names(stub: archive_pb2_grpc.ArchiveServiceStub, pattern: str, timeout: float) -> set[str]:
    response = stub.Find(archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_PATIENT,
                                                 filter=archive_pb2.QueryFilter(patient_name=pattern),
                                                 page_size=100), timeout=timeout)
    return {m.patient.patient_name for m in response.matches}


@pytest.mark.parametrize(("pattern", "expected"), HOSTILE.values(), ids=HOSTILE.keys())
def test_an_adversarial_pattern_answers_at_once_and_health_keeps_answering(archive: Daemon, pattern: str,
                                                                          expected: set[str]) -> None:
    channel = grpc.insecure_channel(archive.target)
    stub, health = archive_pb2_grpc.ArchiveServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    assert find_names(stub, "doe*", 10) == {"Doe^John", "Doe^Jane"}  # warm: the channel is up
    assert len(pattern) == 300 or pattern == "************!"
    started = time.monotonic()
    pending = stub.Find.future(archive_pb2.FindRequest(level=archive_pb2.QUERY_LEVEL_PATIENT,
                                                       filter=archive_pb2.QueryFilter(patient_name=pattern)),
                               timeout=5)
    checked = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    response = pending.result()
    elapsed = time.monotonic() - started
    assert elapsed < 0.1, f"{elapsed:.3f} s for {pattern[:20]!r}..."
    assert {m.patient.patient_name for m in response.matches} == expected


def test_wildcards_keep_their_meaning(archive: Daemon) -> None:
    stub = archive_pb2_grpc.ArchiveServiceStub(grpc.insecure_channel(archive.target))
    cases = {
        "doe^j*": {"Doe^John", "Doe^Jane"},
        "DOE^JOHN": {"Doe^John"},
        "d?e^jan?": {"Doe^Jane"},
        "*^*": set(NAMES),
        "*": set(NAMES),
        "m?ller*": {"Müller^Anna"},
        "MÜLLER^ANNA": {"Müller^Anna"},
        "*robert*": {"Smith^Robert Allen"},
        "*allen": {"Smith^Robert Allen"},
        "*all": set(),
        "doe": set(),
        "???^????": {"Doe^John", "Doe^Jane"},
        "???^???": set(),
        "[d]oe*": set(),  # brackets are literal, not a character class
    }
    for pattern, expected in cases.items():
        assert find_names(stub, pattern, 10) == expected, pattern
