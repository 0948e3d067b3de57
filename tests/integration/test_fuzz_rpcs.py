"""Hypothesis-generated requests against every client-API RPC of one real daemon.

Each request message is built field by field from its protobuf descriptor:
strings with control characters, NULs, path traversal, format strings and up
to 100 KB; integers at and beyond their edges; enums with unknown values;
random bytes; nested messages; and, on top, unknown fields appended on the
wire (valid protobuf a server must ignore). Asserted for every call:

* the status is never UNKNOWN or INTERNAL (an unhandled exception in the daemon);
* the daemon still answers SERVING on grpc.health.v1 afterwards;
* the index counts (patients, studies, series, instances, blobs from
  GetApplianceHealth) are unchanged, except that StoreInstance and PutInstance
  may add one instance when, and only when, they answered OK with STORED;
* calls that do not legitimately take long do not hit their deadline.

Methods that change state when given valid input:

* AddVolume and DrainVolume: inputs are restricted so success is impossible
  (the tier is never a configured one, or the path is relative or under a
  directory that does not exist; the volume is never an existing id or path);
  they must never answer OK and the volume list must not change. The size of
  their error messages is not checked here, and paths that make stat() fail
  with ENAMETOOLONG are included: both once were bugs, and are tested
  in test_size_limits.py.
* Pin and Prefetch: inputs include the real study UIDs and patient IDs, so
  they may succeed (a pin, queued promotions); neither changes the index
  counts, so the full set of assertions still applies.
* ReseedPeer and RestoreFromPeer: replication is not configured on this
  daemon, so success is impossible by construction (UNAVAILABLE).

Deterministic (derandomize=True) so CI never flakes on a new example; set
PACSVAULT_FUZZ_RANDOM=1 to explore new examples locally.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pacsvault.v1 import (
    appliance_pb2,
    archive_pb2,
    audit_pb2,
    common_pb2,
    replication_pb2,
    security_pb2,
    storage_pb2,
    storage_pb2_grpc,
)
from tests.conftest import Daemon, dicom_bytes, identity

FD = pb_descriptor.FieldDescriptor
StatusCode = grpc.StatusCode
CRASH = {StatusCode.UNKNOWN, StatusCode.INTERNAL}
TIERS = ("hot", "capacity")  # the default config's tiers
N_STORED = 4

FUZZ = settings(
    max_examples=80, deadline=None, derandomize=not os.environ.get("PACSVAULT_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
    database=None,
)


# ---------------------------------------------------------------------------------------------
# The daemon: one for the whole module, with a few real instances stored first.

def _stored_instance(n: int) -> tuple[dict[str, str], str, bytes]:
    ids = identity(n, root="1.2.826.0.1.3680043.10.78")
    patient = f"FUZZ-{n % 2}"
    return ids, patient, dicom_bytes(**ids, PatientID=patient)


STORED = [_stored_instance(n) for n in range(N_STORED)]
REAL_UIDS = [uid for ids, _, _ in STORED for uid in ids.values()]
REAL_PATIENTS = sorted({p for _, p, _ in STORED})


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("fuzz")
    daemon = Daemon(root / "appliance").start()
    with daemon.client() as client:
        for _, _, data in STORED:
            assert client.store(data).status == "stored"
    yield daemon
    if daemon.alive:
        daemon.kill()


@pytest.fixture(scope="module")
def channel(fuzz_daemon: Daemon) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(fuzz_daemon.target, options=[("grpc.max_receive_message_length", 8 << 20),
                                                           ("grpc.max_send_message_length", 8 << 20)])
    yield ch
    ch.close()


def index_counts(ch: grpc.Channel) -> tuple[int, ...]:
    response = ch.unary_unary("/pacsvault.v1.ApplianceService/GetApplianceHealth",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=appliance_pb2.GetApplianceHealthResponse.FromString)(
        appliance_pb2.GetApplianceHealthRequest(), timeout=30)
    i = response.index
    return i.patients, i.studies, i.series, i.instances, i.blobs


def serving(ch: grpc.Channel) -> str:
    reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def volumes(ch: grpc.Channel) -> list[tuple[str, str, str]]:
    listed = storage_pb2_grpc.StorageServiceStub(ch).ListVolumes(storage_pb2.ListVolumesRequest(), timeout=10)
    return sorted((v.volume_id, v.path, v.state) for v in listed.volumes)


# ---------------------------------------------------------------------------------------------
# Strategies, from the descriptors.

HOSTILE = [
    "", " ", "../../etc/passwd", "../../../../../../etc/shadow", "..\\..\\windows\\system32\\config\\sam",
    "/etc/passwd", "/", ".", "..", "~root/.ssh/id_rsa", "\x00", "a\x00b", "1.2.840\x00.1", "1.2.3\n4",
    "\r\n\r\nInjected: header", "%s%s%s%n", "{0.__class__.__mro__}", "${jndi:ldap://evil/a}", "' OR 1=1 --",
    "*", "?", "**?*", "\\", "\u202e\u0000\ufeff", "\U0010ffff", "\x7f\x1b[2J",
    "1." * 40, "9" * 65, "0", "1.02", "-1", "20240230", "99999999", "2024-01-01", "0000000", "DOE^JOHN",
    *REAL_UIDS, *REAL_PATIENTS, *TIERS, "tiers/hot", "1.2.840.10008.1.2.1",
]

huge_text = st.builds(lambda unit, n: (unit * (n // len(unit) + 1))[:n],
                      st.sampled_from(["A", "9", "../", "\x00", "é", "\U0001f600", "1.", "%n"]),
                      st.integers(65, 100_000))
hostile_text = st.one_of(
    st.text(max_size=40),  # every Unicode category but surrogates: control characters included
    st.text(alphabet=st.characters(max_codepoint=0x1f), max_size=20),
    st.sampled_from(HOSTILE),
    st.tuples(st.sampled_from(HOSTILE), st.text(max_size=8)).map("".join),
    huge_text,
)


def _ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edges = [v for v in (lo, hi, 0, 1, -1, lo + 1, hi - 1, 1 << 20) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_INT32: _ints(32, True), FD.TYPE_SINT32: _ints(32, True), FD.TYPE_SFIXED32: _ints(32, True),
    FD.TYPE_INT64: _ints(64, True), FD.TYPE_SINT64: _ints(64, True), FD.TYPE_SFIXED64: _ints(64, True),
    FD.TYPE_UINT32: _ints(32, False), FD.TYPE_FIXED32: _ints(32, False),
    FD.TYPE_UINT64: _ints(64, False), FD.TYPE_FIXED64: _ints(64, False),
    FD.TYPE_DOUBLE: st.floats(), FD.TYPE_FLOAT: st.floats(width=32), FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_STRING: hostile_text,
    FD.TYPE_BYTES: st.one_of(st.binary(max_size=256),
                             st.builds(lambda b, n: (b * (n // max(len(b), 1) + 1))[:n],
                                       st.binary(min_size=1, max_size=16), st.integers(0, 100_000))),
}


def _enum(field: FD) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(known), _ints(32, True))  # proto3 enums are open: unknown values parse


# Some fields get likely-valid values too, so calls get past the first check and deeper.
uid_text = st.one_of(
    hostile_text, st.sampled_from(REAL_UIDS),
    st.lists(st.integers(0, 10**12), min_size=2, max_size=8).map(lambda p: "1.2." + ".".join(map(str, p))),
)
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "patient_id": st.one_of(hostile_text, st.sampled_from(REAL_PATIENTS)),
    "until": st.one_of(hostile_text, st.dates().map(lambda d: d.strftime("%Y%m%d"))),
    "start": st.one_of(hostile_text, st.dates().map(lambda d: d.strftime("%Y%m%d"))),
    "end": st.one_of(hostile_text, st.dates().map(lambda d: d.strftime("%Y%m%d"))),
}


def field_strategy(field: FD, depth: int) -> st.SearchStrategy[Any]:
    if field.name.endswith("_uid") and field.type == FD.TYPE_STRING:
        return uid_text
    if field.name in HINTS and not field.is_repeated and field.type == FD.TYPE_STRING:
        return HINTS[field.name]
    if field.name == "level" and field.type == FD.TYPE_ENUM:  # mostly valid levels, else Find stops there
        return st.one_of(st.sampled_from([1, 2, 3, 4]), st.sampled_from([1, 2, 3, 4]), _enum(field))
    if field.type == FD.TYPE_MESSAGE:
        single: st.SearchStrategy[Any] = message_strategy(field.message_type, depth + 1)
    elif field.type == FD.TYPE_ENUM:
        single = _enum(field)
    else:
        single = SCALARS[field.type]
    if field.is_repeated:
        return st.lists(single, max_size=3)
    return single


def message_strategy(descriptor: pb_descriptor.Descriptor, depth: int = 0,
                     overrides: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Message]:
    """Any message of this type: each field unset or set to a generated value.

    ``overrides`` replace a field's whole strategy (unset included: return None for unset).
    """
    cls = _message_class(descriptor)
    if depth > 3:
        return st.just(cls())
    overrides = overrides or {}
    fields = {f.name: overrides[f.name] if f.name in overrides
              else field_strategy(f, depth) if f.name == "level"  # unset is a level error: Find would stop there
              else st.one_of(st.none(), field_strategy(f, depth))
              for f in descriptor.fields}

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            target = getattr(message, name)
            if field.is_repeated:
                if field.type == FD.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == FD.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(fields).map(build)


def _message_class(descriptor: pb_descriptor.Descriptor) -> type[Message]:
    from google.protobuf import message_factory
    return message_factory.GetMessageClass(descriptor)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def unknown_fields(draw: st.DrawFn) -> bytes:
    """Well-formed wire fields with numbers no request message uses: a server must ignore them."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        number = draw(st.integers(1000, 18999) | st.integers(20000, (1 << 29) - 1))
        kind = draw(st.sampled_from([0, 1, 2, 5]))
        out += _varint(number << 3 | kind)
        if kind == 0:
            out += _varint(draw(st.integers(0, (1 << 64) - 1)))
        elif kind == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif kind == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        else:
            payload = draw(st.binary(max_size=512))
            out += _varint(len(payload)) + payload
    return out


def wire(message: Message, extra: bytes) -> bytes:
    return message.SerializeToString() + extra


# ---------------------------------------------------------------------------------------------
# Calls: every method through a raw multicallable, so unknown fields can ride along.

def _method(ch: grpc.Channel, path: str, kind: str, response: type[Message]) -> Callable[..., Any]:
    ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    factory = {"uu": ch.unary_unary, "us": ch.unary_stream, "su": ch.stream_unary}[kind]
    return factory(path, request_serializer=ident, response_deserializer=response.FromString)


class Outcome:
    def __init__(self, code: StatusCode, details: str, response: Any = None, elapsed: float = 0.0) -> None:
        self.code, self.details, self.response, self.elapsed = code, details, response, elapsed

    def __repr__(self) -> str:
        return f"{self.code.name}: {self.details[:300]!r} ({self.elapsed:.2f}s)"


def invoke(call: Callable[[], Any]) -> Outcome:
    started = time.monotonic()
    try:
        response = call()
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "", None, time.monotonic() - started)
    return Outcome(StatusCode.OK, "", response, time.monotonic() - started)


class Rpc:
    def __init__(self, service: str, name: str, kind: str, request: type[Message], response: type[Message],
                 timeout: float = 30.0, may_time_out: bool = False, examples: int | None = None,
                 overrides: dict[str, st.SearchStrategy[Any]] | None = None) -> None:
        self.path = f"/pacsvault.v1.{service}/{name}"
        self.name, self.kind, self.request, self.response = name, kind, request, response
        self.timeout, self.may_time_out, self.examples = timeout, may_time_out, examples
        self.overrides = overrides

    def __call__(self, ch: grpc.Channel, payload: bytes | list[bytes]) -> Outcome:
        method = _method(ch, self.path, self.kind, self.response)
        if self.kind == "uu":
            return invoke(lambda: method(payload, timeout=self.timeout))
        if self.kind == "us":
            return invoke(lambda: list(method(payload, timeout=self.timeout)))
        return invoke(lambda: method(iter(payload), timeout=self.timeout))


A, AP, S, R = "ArchiveService", "ApplianceService", "StorageService", "ReplicationService"
SE, SH, AU = "SecurityService", "ShareService", "AuditService"
UNARY_AND_SERVER_STREAMING = [
    Rpc(A, "Find", "uu", archive_pb2.FindRequest, archive_pb2.FindResponse),
    Rpc(A, "ListPatientStudies", "uu", archive_pb2.ListPatientStudiesRequest, archive_pb2.ListPatientStudiesResponse),
    Rpc(A, "GetInstance", "us", archive_pb2.GetInstanceRequest, archive_pb2.GetInstanceResponse),
    Rpc(A, "ReadInstance", "uu", archive_pb2.ReadInstanceRequest, archive_pb2.ReadInstanceResponse),
    Rpc(A, "GetSeries", "us", archive_pb2.GetSeriesRequest, archive_pb2.GetSeriesResponse),
    Rpc(A, "GetStudy", "us", archive_pb2.GetStudyRequest, archive_pb2.GetStudyResponse),
    Rpc(A, "GetStudyMetadata", "us", archive_pb2.GetStudyMetadataRequest, archive_pb2.GetStudyMetadataResponse),
    Rpc(A, "Prefetch", "uu", archive_pb2.PrefetchRequest, archive_pb2.PrefetchResponse),
    Rpc(A, "Pin", "uu", archive_pb2.PinRequest, archive_pb2.PinResponse),
    # Never a stored study (a valid request for one would rightly delete it): whatever else arrives,
    # hostile or merely unknown, must be refused without harm.
    Rpc(A, "DeleteStudy", "uu", archive_pb2.DeleteStudyRequest, archive_pb2.DeleteStudyResponse,
        overrides={"study_instance_uid": st.one_of(st.none(), uid_text.filter(lambda u: u not in REAL_UIDS))}),
    Rpc(A, "ApproveStudyDeletion", "uu", archive_pb2.ApproveStudyDeletionRequest,
        archive_pb2.ApproveStudyDeletionResponse),
    Rpc(A, "ListStudyDeletionRequests", "uu", archive_pb2.ListStudyDeletionRequestsRequest,
        archive_pb2.ListStudyDeletionRequestsResponse),
    Rpc(AP, "GetApplianceHealth", "uu", appliance_pb2.GetApplianceHealthRequest,
        appliance_pb2.GetApplianceHealthResponse),
    Rpc(AP, "WatchHealth", "us", appliance_pb2.WatchHealthRequest, appliance_pb2.WatchHealthResponse,
        timeout=0.3, may_time_out=True, examples=12),  # > health.max_watchers: slots must come back
    Rpc(S, "ListVolumes", "uu", storage_pb2.ListVolumesRequest, storage_pb2.ListVolumesResponse),
    Rpc(S, "PlanMoves", "uu", storage_pb2.PlanMovesRequest, storage_pb2.PlanMovesResponse),
    # Generated text never names one of the daemon's volumes: only refusals can come back.
    Rpc(S, "RebuildVolume", "uu", storage_pb2.RebuildVolumeRequest, storage_pb2.RebuildVolumeResponse),
    Rpc(R, "GetReplicationStatus", "uu", replication_pb2.GetReplicationStatusRequest,
        replication_pb2.GetReplicationStatusResponse),
    Rpc(R, "ReseedPeer", "uu", replication_pb2.ReseedPeerRequest, replication_pb2.ReseedPeerResponse),
    Rpc(R, "RestoreFromPeer", "us", replication_pb2.RestoreFromPeerRequest, replication_pb2.RestoreFromPeerResponse,
        timeout=2.0, may_time_out=True, examples=15),
    # Security, shares and audit: may create credentials or revocations when the input happens to be
    # valid, none of which touches the index counts checked here.
    Rpc(SE, "CreateToken", "uu", security_pb2.CreateTokenRequest, security_pb2.CreateTokenResponse),
    Rpc(SE, "ListTokens", "uu", security_pb2.ListTokensRequest, security_pb2.ListTokensResponse),
    Rpc(SE, "RevokeToken", "uu", security_pb2.RevokeTokenRequest, security_pb2.RevokeTokenResponse),
    Rpc(SE, "RevokeCertificate", "uu", security_pb2.RevokeCertificateRequest,
        security_pb2.RevokeCertificateResponse),
    Rpc(SE, "BreakGlass", "uu", security_pb2.BreakGlassRequest, security_pb2.BreakGlassResponse),
    # Takes no input: a few examples cover it, and each rotation is real (keyring rewritten, blobs re-wrapped).
    Rpc(SE, "RotateKeys", "uu", security_pb2.RotateKeysRequest, security_pb2.RotateKeysResponse, examples=3),
    Rpc(SE, "GetEncryptionStatus", "uu", security_pb2.GetEncryptionStatusRequest,
        security_pb2.GetEncryptionStatusResponse),
    Rpc(SH, "CreateShare", "uu", security_pb2.CreateShareRequest, security_pb2.CreateShareResponse),
    Rpc(SH, "ListShares", "uu", security_pb2.ListSharesRequest, security_pb2.ListSharesResponse),
    Rpc(SH, "RevokeShare", "uu", security_pb2.RevokeShareRequest, security_pb2.RevokeShareResponse),
    Rpc(AU, "VerifyAudit", "uu", audit_pb2.VerifyAuditRequest, audit_pb2.VerifyAuditResponse),
    Rpc(AU, "QueryAudit", "us", audit_pb2.QueryAuditRequest, audit_pb2.QueryAuditResponse),
]
ADD_VOLUME = Rpc(S, "AddVolume", "uu", storage_pb2.AddVolumeRequest, storage_pb2.AddVolumeResponse)
DRAIN_VOLUME = Rpc(S, "DrainVolume", "uu", storage_pb2.DrainVolumeRequest, storage_pb2.DrainVolumeResponse)
STORE = Rpc(A, "StoreInstance", "su", archive_pb2.StoreInstanceRequest, archive_pb2.StoreInstanceResponse)
PUT = Rpc(A, "PutInstance", "uu", archive_pb2.PutInstanceRequest, archive_pb2.PutInstanceResponse)
STORING = (STORE, PUT)


# Served on the client listener but outside this file's brief; each must be named here with a reason, so a
# new service is a decision, not an oversight.
NOT_FUZZED: dict[str, str] = {}


def test_the_table_covers_every_client_api_method(channel: grpc.Channel) -> None:
    fuzzed = {r.path for r in (*UNARY_AND_SERVER_STREAMING, ADD_VOLUME, DRAIN_VOLUME, *STORING)}
    in_scope = {f"/{s.full_name}/{m.name}" for mod in (archive_pb2, appliance_pb2, storage_pb2, replication_pb2,
                                                         security_pb2, audit_pb2)
                for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert fuzzed == in_scope
    # And every pacsvault service the daemon serves (by reflection) is fuzzed or named in NOT_FUZZED.
    reply = next(iter(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)))
    served = {s.name for s in reply.list_services_response.service if s.name.startswith("pacsvault.")}
    covered = {path.split("/")[1] for path in fuzzed}
    assert served - covered - set(NOT_FUZZED) == set(), "served but neither fuzzed nor listed in NOT_FUZZED"


def check(daemon: Daemon, ch: grpc.Channel, rpc: Rpc, outcome: Outcome, before: tuple[int, ...],
          request: object) -> tuple[int, ...]:
    """The invariants after one call; returns the counts now."""
    context = f"{rpc.name}({str(request)[:400]!r}) -> {outcome}"
    assert daemon.alive, f"daemon died after {context}\n{daemon.log()[-4000:]}"
    assert outcome.code not in CRASH, f"{context}\n--- daemon log ---\n{daemon.log()[-4000:]}"
    if not rpc.may_time_out:
        assert outcome.code != StatusCode.DEADLINE_EXCEEDED, f"hung: {context}"
    if rpc.name == "WatchHealth":  # streams until its deadline; a refusal would be a watcher slot not freed
        assert outcome.code == StatusCode.DEADLINE_EXCEEDED, context
    if rpc not in (ADD_VOLUME, DRAIN_VOLUME, *STORING):  # those two: test_size_limits.py
        echoed = _echo(outcome.details, _strings(request))
        assert not echoed, f"the error echoes {len(echoed)}+ characters of the input: {context}"
    assert serving(ch) == "SERVING", context
    after = index_counts(ch)
    if rpc in STORING and outcome.code == StatusCode.OK:
        response = outcome.response.outcome if rpc is PUT else outcome.response
        stored = response.status == archive_pb2.STORE_STATUS_STORED
        assert after[3] == before[3] + (1 if stored else 0), context
        assert after[4] >= before[4] and all(a >= b for a, b in zip(after, before, strict=True)), context
    else:
        assert after == before, f"index changed {before} -> {after} by {context}"
    return after


ECHO_LIMIT = 100


# Fields allowed to be quoted whole in an error message (none: every message cuts its input short).
KNOWN_ECHO: set[str] = set()


def _strings(message: object) -> list[str]:
    """The long string values of a request, whose echo in a status message is checked."""
    if not isinstance(message, Message):
        return []
    out: list[str] = []
    for field, value in message.ListFields():
        if field.name in KNOWN_ECHO:
            continue
        values = value if field.is_repeated else [value]
        for v in values:
            if isinstance(v, str) and len(v) > ECHO_LIMIT:
                out.append(v)
            elif isinstance(v, Message):
                out += _strings(v)
    return out


def _echo(details: str, inputs: list[str]) -> str:
    """A run of more than ECHO_LIMIT characters of an input (as is, or repr-escaped) in the details."""
    for text in inputs:
        for form in (text, repr(text)[1:-1]):
            for at in range(0, max(len(details) - ECHO_LIMIT, 0)):
                window = details[at : at + ECHO_LIMIT + 1]
                if window in form:
                    return window
    return ""


# ---------------------------------------------------------------------------------------------
# The tests.

@pytest.mark.parametrize("rpc", UNARY_AND_SERVER_STREAMING, ids=lambda r: r.name)
def test_generated_requests(fuzz_daemon: Daemon, channel: grpc.Channel, rpc: Rpc) -> None:
    strategy = st.tuples(message_strategy(rpc.request.DESCRIPTOR, overrides=rpc.overrides), unknown_fields())

    @settings(FUZZ, max_examples=rpc.examples or FUZZ.max_examples)
    @given(generated=strategy)
    def run(generated: tuple[Message, bytes]) -> None:
        request, extra = generated
        before = index_counts(channel)
        outcome = rpc(channel, wire(request, extra))
        check(fuzz_daemon, channel, rpc, outcome, before, request)

    run()


def _volume_fuzz(channel: grpc.Channel) -> tuple[set[str], st.SearchStrategy[Message], st.SearchStrategy[Message]]:
    existing = volumes(channel)
    taken = {v for vid, path, _ in existing for v in (vid, path)}
    # AddVolume: never a configured tier, or a configured tier with a path that cannot be a directory.
    not_a_tier = hostile_text.filter(lambda t: t not in TIERS)
    no_dir = st.one_of(
        hostile_text.filter(lambda p: not p.startswith("/")),  # relative (or empty): refused first
        st.tuples(st.just("/nonexistent-pacsvault-fuzz/"), hostile_text).map("".join),
    )
    add = st.one_of(
        message_strategy(storage_pb2.AddVolumeRequest.DESCRIPTOR, overrides={"tier": not_a_tier}).filter(
            lambda m: m.tier not in TIERS),
        st.builds(storage_pb2.AddVolumeRequest, tier=st.sampled_from(TIERS), path=no_dir),
    )
    drain = message_strategy(storage_pb2.DrainVolumeRequest.DESCRIPTOR,
                             overrides={"volume": hostile_text.filter(lambda v: v not in taken)}).filter(
        lambda m: m.volume not in taken)
    return taken, add, drain


@pytest.mark.parametrize("which", ["AddVolume", "DrainVolume"])
def test_generated_volume_changes_that_cannot_succeed(fuzz_daemon: Daemon, channel: grpc.Channel,
                                                      which: str) -> None:
    _, add, drain = _volume_fuzz(channel)
    rpc, strategy = (ADD_VOLUME, add) if which == "AddVolume" else (DRAIN_VOLUME, drain)
    listed = volumes(channel)

    @settings(FUZZ)
    @given(request=strategy, extra=unknown_fields())
    def run(request: Message, extra: bytes) -> None:
        before = index_counts(channel)
        outcome = rpc(channel, wire(request, extra))
        check(fuzz_daemon, channel, rpc, outcome, before, request)
        assert outcome.code != StatusCode.OK, f"{which} succeeded on input built to fail: {request}"
        assert volumes(channel) == listed

    run()


# StoreInstance: a few chunks of random bytes, of things that start like DICOM, or of a real
# file mutated (truncated, bytes flipped, bytes inserted), with a fuzzed expected_digest.
REAL_FILE = dicom_bytes(**identity(900, root="1.2.826.0.1.3680043.10.78"), PatientID="FUZZ-NEW")


@st.composite
def mutated_dicom(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([REAL_FILE, STORED[0][2]])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        if how == "truncate":
            del data[at:]
        elif how == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


store_payloads = st.one_of(
    st.binary(max_size=65536),
    st.tuples(st.just(b"\x00" * 128 + b"DICM"), st.binary(max_size=4096)).map(b"".join),
    mutated_dicom(),
)


@st.composite
def store_streams(draw: st.DrawFn) -> list[Message]:
    data = draw(store_payloads)
    chunks = _split(data, draw(st.lists(st.integers(0, 1 << 20), max_size=3)))
    digest = message_strategy(common_pb2.Digest.DESCRIPTOR)
    requests = []
    for n, chunk in enumerate(chunks):
        request = archive_pb2.StoreInstanceRequest(data=chunk)
        # expected_digest: usually absent; sometimes fuzzed, sometimes (wrongly) in a later message.
        if draw(st.integers(0, 5)) == 0 and (n == 0 or draw(st.booleans())):
            request.expected_digest.CopyFrom(draw(digest))
        requests.append(request)
    return requests


def test_generated_store_streams(fuzz_daemon: Daemon, channel: grpc.Channel) -> None:
    @settings(FUZZ, max_examples=80)
    @given(requests=store_streams(), extra=unknown_fields())
    def run(requests: list[Message], extra: bytes) -> None:
        before = index_counts(channel)
        outcome = STORE(channel, [wire(r, extra) for r in requests])
        check(fuzz_daemon, channel, STORE, outcome, before, [len(r.data) for r in requests])

    run()


@st.composite
def put_requests(draw: st.DrawFn) -> Message:
    request = archive_pb2.PutInstanceRequest(data=draw(store_payloads))
    if draw(st.integers(0, 3)) == 0:  # expected_digest: usually absent, sometimes fuzzed
        request.expected_digest.CopyFrom(draw(message_strategy(common_pb2.Digest.DESCRIPTOR)))
    return request


def test_generated_put_instances(fuzz_daemon: Daemon, channel: grpc.Channel) -> None:
    @settings(FUZZ, max_examples=80)
    @given(request=put_requests(), extra=unknown_fields())
    def run(request: Message, extra: bytes) -> None:
        before = index_counts(channel)
        outcome = PUT(channel, wire(request, extra))
        check(fuzz_daemon, channel, PUT, outcome, before, len(request.data))

    run()


# ---------------------------------------------------------------------------------------------
# Bytes that are not a protobuf message at all.

CORRUPT = {
    "all 0xff": b"\xff\xff\xff\xff",
    "truncated varint": b"\x08\xff",
    "length past the end": b"\x0a\xff\xff\xff\xff\x0f",
    "field number 0": b"\x00\x01",
    "bad UTF-8 in field 1": b"\x0a\x02\xc3\x28",
}
ALL_RPCS = [*UNARY_AND_SERVER_STREAMING, ADD_VOLUME, DRAIN_VOLUME, *STORING]


def _corrupt_outcomes(daemon: Daemon, ch: grpc.Channel) -> dict[tuple[str, str], Outcome]:
    before = index_counts(ch)
    seen = {}
    for rpc in ALL_RPCS:
        for name, payload in CORRUPT.items():
            seen[(rpc.name, name)] = rpc(ch, [payload] if rpc is STORE else payload)
            assert daemon.alive
    assert serving(ch) == "SERVING"
    assert index_counts(ch) == before
    return seen


def test_corrupt_wire_bytes_cost_nothing(fuzz_daemon: Daemon, channel: grpc.Channel) -> None:
    """Whatever the status, a request that is not protobuf changes nothing and kills nothing."""
    seen = _corrupt_outcomes(fuzz_daemon, channel)
    # No hang (the index and SERVING were checked in _corrupt_outcomes).
    hung = {k: o for k, o in seen.items() if o.code == StatusCode.DEADLINE_EXCEEDED and k[0] != "WatchHealth"}
    assert hung == {}, hung


def test_corrupt_wire_bytes_are_invalid_argument(fuzz_daemon: Daemon, channel: grpc.Channel) -> None:
    seen = _corrupt_outcomes(fuzz_daemon, channel)
    crashed = {k: o for k, o in seen.items() if o.code in CRASH}
    assert crashed == {}, crashed
