"""The peer as the audit trail's witness, on two real appliances over mutual TLS (issue 16, defect 1).

The witness keeps the first checkpoint it is given for each sequence number
and refuses any other (append-only), accepts only checkpoints signed by the
key it pinned for its peer, and gives every checkpoint back, page by page.
``audit verify`` compares the trail with every one of them and does not pass
when the witness cannot be asked. A trail cut while the appliance was down
is caught at the next start, named at the cut, and the appliance never
numbers a new record with a number the witness already vouched for.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pacsvault.client import corpus as corpus_module
from pacsvault.daemon.audit.trail import canonical, checkpoint_signer
from pacsvault.daemon.config import Config
from pacsvault.daemon.crypto.appliance_keys import open_keys
from pacsvault.daemon.replication import certs
from pacsvault.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import Daemon, run_cli, start_together
from tests.integration.test_replication_pair import Pair, config_for, store, wait_drained
from tests.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(daemon_factory, tmp_path: Path) -> Pair:  # type: ignore[no-untyped-def]
    """Two peers whose trails are checkpointed every 5 records."""
    cert_dir = tmp_path / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": free_port(), "site-b": free_port()}
    daemons = {}
    for name, peer in (("site-b", "site-a"), ("site-a", "site-b")):
        config = config_for(name, peer, cert_dir, ports[name], ports[peer], tmp_path / f"{name}.toml")
        config.write_text(config.read_text() + "[audit]\ncheckpoint_every = 5\n")
        daemons[name] = daemon_factory(name, config=config, start=False)
    start_together(*daemons.values())
    return Pair(daemons["site-a"], daemons["site-b"], cert_dir, ports)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[corpus_module.GeneratedInstance]:
    return corpus_module.generate(tmp_path_factory.mktemp("witness-corpus"), patients=2, studies_per_patient=2,
                                  series_per_study=1, instances_per_series=4, seed=41)


def as_site_a(pair: Pair) -> peer_pb2_grpc.PeerServiceStub:
    """b's peer listener, called with a's own certificate (what a stolen copy of it could do)."""
    credentials = grpc.ssl_channel_credentials((pair.cert_dir / "ca.pem").read_bytes(),
                                               (pair.cert_dir / "site-a.key").read_bytes(),
                                               (pair.cert_dir / "site-a.pem").read_bytes())
    channel = grpc.secure_channel(f"127.0.0.1:{pair.peer_ports['site-b']}", credentials)
    return peer_pb2_grpc.PeerServiceStub(channel)


def witnessed(pair: Pair) -> list[dict]:
    """Every checkpoint of a's trail that b keeps, following the pages."""
    stub, found, token = as_site_a(pair), [], ""
    while True:
        request = peer_pb2.ListAuditCheckpointsRequest()
        if token:
            request.page_token = token
        response = stub.ListAuditCheckpoints(request, timeout=10)
        found += [json.loads(c) for c in response.checkpoint_json]
        token = getattr(response, "next_page_token", "")
        if not token:
            return found


def signer_of(daemon: Daemon) -> Ed25519PrivateKey:
    """The appliance's checkpoint signing key, from its keyring (beside its data dir)."""
    keys = open_keys(Config(data_dir=str(daemon.data_dir)))
    assert keys is not None
    return checkpoint_signer(keys.audit_chain_key)


def signed(signer: Ed25519PrivateKey, seq: int, tag: str) -> str:
    body = {"seq": seq, "tag": tag, "time": time.time()}
    signature = base64.b64encode(signer.sign(canonical(body))).decode()
    key = base64.b64encode(signer.public_key().public_bytes_raw()).decode()
    return json.dumps({**body, "signature": signature, "key": key}, sort_keys=True)


def put(pair: Pair, checkpoint_json: str) -> grpc.StatusCode:
    try:
        as_site_a(pair).PutAuditCheckpoint(peer_pb2.PutAuditCheckpointRequest(checkpoint_json=checkpoint_json),
                                           timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def alerts(daemon: Daemon, kind: str) -> list[dict]:
    result = run_cli(daemon.target, "audit", "query", "--json")
    assert result.returncode == 0, result.stderr
    return [r for r in map(json.loads, result.stdout.splitlines())
            if r.get("phase") == "alert" and r.get("alert") == kind]


def metric(daemon: Daemon, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def wait_for_witness(pair: Pair, at_least: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = witnessed(pair)
        if found and max(c["seq"] for c in found) >= at_least:
            return found
        assert time.monotonic() < deadline, f"the witness holds {found}, not checkpoint {at_least}"
        time.sleep(0.3)


def test_the_witness_keeps_the_first_checkpoint_and_refuses_a_conflicting_one(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    store(pair.a, corpus[:4])
    wait_drained(pair.a)
    first = wait_for_witness(pair, 5)[0]
    signer = signer_of(pair.a)
    assert put(pair, signed(signer, first["seq"], "f" * 64)) == grpc.StatusCode.ALREADY_EXISTS
    kept = {c["seq"]: c for c in witnessed(pair)}
    assert kept[first["seq"]]["tag"] == first["tag"], "the witness kept what it was given first"
    # The same checkpoint again (a retried delivery) is no conflict.
    again = {k: first[k] for k in ("seq", "tag", "time", "signature", "key") if k in first}
    assert put(pair, json.dumps(again, sort_keys=True)) == grpc.StatusCode.OK
    raised = alerts(pair.b, "WitnessConflict")
    assert raised and raised[0]["peer_appliance"] == "site-a" and raised[0]["checkpoint_seq"] == first["seq"]
    deadline = time.monotonic() + 10  # the back office follows the trail every second
    while metric(pair.b, 'pacsvault_security_alerts_total{kind="WitnessConflict"}') < 1:
        assert time.monotonic() < deadline, "the conflict is counted in /metrics"
        time.sleep(0.3)


def test_the_witness_refuses_a_checkpoint_its_peer_did_not_sign(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    store(pair.a, corpus[:2])
    wait_drained(pair.a)
    wait_for_witness(pair, 5)
    stranger = Ed25519PrivateKey.generate()  # a stolen peer certificate does not give a's signing key
    assert put(pair, signed(stranger, 10_000, "e" * 64)) == grpc.StatusCode.PERMISSION_DENIED
    unsigned = json.dumps({"seq": 10_001, "tag": "e" * 64, "time": time.time()})
    assert put(pair, unsigned) in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
    assert not [c for c in witnessed(pair) if c["seq"] >= 10_000]
    assert len(alerts(pair.b, "WitnessConflict")) >= 2


def test_verify_pages_through_every_witnessed_checkpoint(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    store(pair.a, corpus[:2])
    wait_drained(pair.a)
    wait_for_witness(pair, 5)
    signer = signer_of(pair.a)
    for seq in range(20_001, 20_151):  # more than any one answer used to carry
        assert put(pair, signed(signer, seq, "d" * 64)) == grpc.StatusCode.OK
    assert len(witnessed(pair)) >= 151
    body = json.loads(run_cli(pair.a.target, "audit", "verify", "--json").stdout)
    assert body["witness_checkpoints"] >= 151, body
    # Each of them is compared: these vouch for records the trail never had.
    assert not body["intact"] and "cut off" in body["problem"], body


def test_verify_does_not_pass_while_the_witness_cannot_be_asked(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    store(pair.a, corpus[:2])
    wait_drained(pair.a)
    pair.b.stop()
    result = run_cli(pair.a.target, "audit", "verify", "--json")
    body = json.loads(result.stdout)
    assert result.returncode != 0, body
    assert body["peer_consulted"] is False and not body["intact"] and body["witness_error"], body
    plain = run_cli(pair.a.target, "audit", "verify")
    assert plain.returncode != 0 and "witness" in plain.stdout, plain.stdout
    pair.b.start()
    consulted = run_cli(pair.a.target, "audit", "verify", "--json")
    assert consulted.returncode == 0 and json.loads(consulted.stdout)["peer_consulted"] is True, consulted.stdout


def test_a_cut_tail_is_named_at_the_cut_and_its_numbers_are_never_reused(pair: Pair, corpus: list) -> None:  # type: ignore[type-arg]
    """The issue's reproduction: stop, cut the last lines and the local checkpoints above the cut, restart, work."""
    store(pair.a, corpus[:6])
    wait_drained(pair.a)
    pair.a.stop()  # a clean stop hands a final checkpoint to the witness
    vouched = max(c["seq"] for c in witnessed(pair))
    trail = pair.a.data_dir / "audit" / "trail.jsonl"
    lines = trail.read_bytes().splitlines(keepends=True)
    assert vouched == len(lines), "the witness vouched for the whole trail"
    cut = len(lines) - 7
    trail.write_bytes(b"".join(lines[:cut]))
    local = trail.with_name("trail.jsonl.checkpoints")
    local.write_bytes(b"".join(line for line in local.read_bytes().splitlines(keepends=True)
                               if json.loads(line)["seq"] <= cut))
    restarted = time.time()
    pair.a.start()
    store(pair.a, corpus[6:12])  # keep working
    wait_drained(pair.a)
    time.sleep(1.5)  # a checkpoint or two of the new records reaches the witness

    result = run_cli(pair.a.target, "audit", "verify", "--json")
    body = json.loads(result.stdout)
    assert result.returncode == 1 and not body["intact"] and body["peer_consulted"], body
    assert body["first_bad_record"] == cut + 1, body
    assert "cut" in body["problem"], body
    records = [json.loads(line) for line in run_cli(pair.a.target, "audit", "query", "--json").stdout.splitlines()]
    since = [r for r in records if float(r["time"]) >= restarted]
    assert since and min(r["seq"] for r in since) > vouched, "no number the witness vouched for is used again"
    broken = [r for r in since if r.get("alert") == "AuditChainBroken"]
    assert broken and broken[0]["cut_after"] == cut and broken[0]["vouched"] == vouched, broken
    assert not alerts(pair.b, "WitnessConflict"), "a sent the witness no conflicting checkpoint"
    assert max(c["seq"] for c in witnessed(pair)) > vouched, "new checkpoints reach the witness"
    assert metric(pair.a, 'pacsvault_security_alerts_total{kind="AuditChainBroken"}') >= 1
