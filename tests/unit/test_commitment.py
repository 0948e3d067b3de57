"""Storage Commitment's use case and its index records, on a real index with real instances.

With dicom.commit_after_replication a reference is committed only once the
peer has acknowledged its blob (the outbox acknowledgement sets the blob's
``replicated`` flag, as the replication sender does); one still waiting
after commitment_timeout_s fails. Requests are claimed with a lease, so two
processes never report the same one at once and a dead owner's claim runs out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsvault.daemon import config as config_module
from pacsvault.daemon.commitment import NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE, CLASS_INSTANCE_CONFLICT, \
    Commitments
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index import commitments, outbox
from pacsvault.daemon.processes.in_process import InProcess
from pacsvault.daemon.replication import certs
from tests.conftest import dicom_bytes, identity

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def archive(tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = certs.make_ca()
    me = certs.issue_cert(ca, "site-a", ip_addresses=["127.0.0.1"])
    for name, data in {"ca.pem": ca.cert_pem(), "a.pem": me.cert_pem(), "a.key": me.key_pem()}.items():
        (pki / name).write_bytes(data)
    config = config_module.from_dict({
        "data_dir": str(tmp_path / "data"),
        "replication": {"enabled": True, "appliance_name": "site-a", "peer_name": "site-b",
                        "peer_address": "127.0.0.1:9", "ca_file": str(pki / "ca.pem"),
                        "cert_file": str(pki / "a.pem"), "key_file": str(pki / "a.key")},
        "dicom": {"commit_after_replication": True, "commitment_timeout_s": 60.0},
        "metrics": {"enabled": False},
    })
    (tmp_path / "run").mkdir()
    built = InProcess(config, tmp_path / "run")
    yield built
    built.close()


def test_committed_only_once_the_peer_holds_it_and_failed_after_the_timeout(archive) -> None:  # type: ignore[no-untyped-def]
    now = [1000.0]
    judge = Commitments(archive.index, archive.catalog, after_replication=True, timeout_s=60.0, clock=lambda: now[0])
    for n in (1, 2):
        archive.store(dicom_bytes(**identity(n)))
    first, second = identity(1)["SOPInstanceUID"], identity(2)["SOPInstanceUID"]
    record = judge.request("1.2.826.0.1.3680043.10.77.500", "CT_ROOM", "local:loopback",
                           [(CT, first), (CT, second), (CT, "1.2.826.0.1.3680043.10.77.404"),
                            ("1.2.840.10008.5.1.4.1.1.4", first)])
    verdict = judge.judge(record)
    assert verdict.committed == [] and verdict.pending == 2
    assert sorted(r for *_, r in verdict.failed) == [NO_SUCH_OBJECT_INSTANCE, CLASS_INSTANCE_CONFLICT]
    # The peer acknowledges the first instance's blob.
    entries = [e for e in outbox.pending(archive.index, 100) if e[1].sop_instance_uid == first]
    outbox.acknowledge(archive.index, entries)
    verdict = judge.judge(record)
    assert verdict.committed == [(CT, first)] and verdict.pending == 1
    now[0] += 61  # the second never reached the peer in time
    verdict = judge.judge(record)
    assert verdict.final and (CT, second, PROCESSING_FAILURE) in verdict.failed
    # Without the rule, what is indexed here (durable) is committed at once.
    plain = Commitments(archive.index, archive.catalog, after_replication=False, timeout_s=60.0)
    assert plain.judge(record).committed == [(CT, first), (CT, second)]


def test_requests_are_checked_before_they_are_kept(archive) -> None:  # type: ignore[no-untyped-def]
    judge = Commitments(archive.index, archive.catalog, after_replication=False, timeout_s=60.0)
    with pytest.raises(InvalidInput, match="TransactionUID"):
        judge.request("not a uid", "CT", "p", [(CT, "1.2.3")])
    with pytest.raises(InvalidInput, match="lists no instance"):
        judge.request("1.2.3.4", "CT", "p", [])
    assert commitments.due(archive.index, now=10**12) == []


def test_a_claim_holds_until_released_or_its_lease_runs_out(archive) -> None:  # type: ignore[no-untyped-def]
    judge = Commitments(archive.index, archive.catalog, after_replication=False, timeout_s=60.0, clock=lambda: 100.0)
    judge.request("1.2.3.4.5", "CT", "p", [(CT, "1.2.3.4.6")])
    index = archive.index
    assert [r.transaction_uid for r in commitments.due(index, 100.0)] == ["1.2.3.4.5"]
    assert commitments.claim(index, "1.2.3.4.5", "worker-1", 100.0, lease_s=30) is not None
    assert commitments.claim(index, "1.2.3.4.5", "back-office", 110.0, lease_s=30) is None
    assert commitments.due(index, 110.0) == []
    assert commitments.claim(index, "1.2.3.4.5", "back-office", 131.0, lease_s=30) is not None  # worker-1 died
    commitments.release(index, "1.2.3.4.5", "back-office", next_attempt_at=200.0, attempted=True)
    assert commitments.due(index, 150.0) == []
    (again,) = commitments.due(index, 200.0)
    assert again.attempts == 1 and again.claimed_by == ""
    commitments.finish(index, "1.2.3.4.5")
    assert commitments.get(index, "1.2.3.4.5") is None
