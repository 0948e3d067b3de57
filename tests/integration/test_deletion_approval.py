"""Deletion with a second approver (issue 16: security.delete_requires_second_admin): one admin asks,
another approves, and the audit trail has both; nobody approves their own request."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import grpc
import pytest

from pacsvault.client import PacsvaultClient
from pacsvault.daemon.audit import atna
from tests.atna_support import validate
from tests.conftest import Daemon, dicom_bytes, identity, run_cli
from tests.integration.test_security_alerts import records
from tests.integrity.test_index_rebuild import rebuild

FIRST, SECOND = "spiffe://pacsvault/client/admin-ana", "spiffe://pacsvault/client/admin-bo"


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def guarded(daemon_factory, tmp_path: Path) -> tuple[Daemon, str, str]:  # type: ignore[no-untyped-def]
    (tmp_path / "pv.toml").write_text(
        "[security]\ndelete_requires_second_admin = true\n"
        f'principals = [{{ identity = "{FIRST}", roles = ["admin"] }}, {{ identity = "{SECOND}", roles = ["admin"] }}]\n')
    daemon = daemon_factory(config=tmp_path / "pv.toml")
    with daemon.client() as local:
        for n in range(2):
            assert local.store(dicom_bytes(PatientID="TWO-1", **identity(n))).ok
        first = local.create_token(FIRST, ttl_seconds=600).token
        second = local.create_token(SECOND, ttl_seconds=600).token
    return daemon, first, second


def test_one_admin_asks_another_approves_and_both_are_audited(guarded) -> None:  # type: ignore[no-untyped-def]
    daemon, first, second = guarded
    study = identity(0)["StudyInstanceUID"]
    with PacsvaultClient(daemon.target, token=first) as ana:
        asked = ana.delete_study(study, "retention period over")
        assert asked.approval_request_id and asked.instances_deleted == 0
        assert code_of(lambda: ana.approve_study_deletion(asked.approval_request_id)) == \
            grpc.StatusCode.PERMISSION_DENIED, "nobody approves their own request"
    with daemon.client() as local:
        assert local.health().index.instances == 2, "nothing deleted yet"
    listed = run_cli(daemon.target, "--token", second, "delete-requests", "--json")
    assert listed.returncode == 0, listed.stderr
    pending = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(p["request_id"], p["study_instance_uid"], p["requested_by"], p["reason"]) for p in pending] == \
        [(asked.approval_request_id, study, FIRST, "retention period over")]
    approved = run_cli(daemon.target, "--token", second, "delete-approve", asked.approval_request_id, "--yes")
    assert approved.returncode == 0 and "1 instances" in approved.stdout, approved.stdout + approved.stderr
    with daemon.client() as local:
        assert local.health().index.instances == 1
        assert [m.study.study_instance_uid for m in local.find("study")] == [identity(1)["StudyInstanceUID"]]
    with PacsvaultClient(daemon.target, token=second) as bo:
        assert code_of(lambda: bo.approve_study_deletion(asked.approval_request_id)) == grpc.StatusCode.NOT_FOUND
        assert bo.study_deletion_requests() == []

    time.sleep(0.3)  # outcome records follow the answers
    trail = records(daemon)
    asked_record = next(r for r in trail if r.get("action") == "DeleteStudy" and r.get("phase") == "end")
    assert (asked_record["principal"], asked_record["approval_request_id"], asked_record["reason"]) == \
        (FIRST, asked.approval_request_id, "retention period over")
    done = next(r for r in trail if r.get("action") == "ApproveStudyDeletion" and r.get("phase") == "end"
                and r.get("outcome") == "OK")
    assert (done["principal"], done["requested_by"], done["study_instance_uid"], done["outcome"]) == \
        (SECOND, FIRST, study, "OK")
    refused = [r for r in trail if r.get("action") == "ApproveStudyDeletion" and r.get("outcome") == "PERMISSION_DENIED"]
    assert refused and refused[0]["principal"] == FIRST
    assert any(r.get("action") == "ApproveStudyDeletion" for r in trail if r.get("phase") == "end"
               and r.get("outcome") == "PERMISSION_DENIED"), "a self-approval is refused, and an alert"
    # ATNA: the request is a use of a restricted function, the approval the study's deletion.
    request_message = validate(atna.to_audit_messages(asked_record, "site-a")[0])
    assert request_message.find("EventIdentification/EventTypeCode").get("csd-code") == "110132"
    deleted = validate(atna.to_audit_messages(done, "site-a")[0])
    assert (deleted.find("EventIdentification/EventID").get("csd-code"),
            deleted.find("EventIdentification").get("EventActionCode")) == ("110105", "D")
    study_object = deleted.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
    assert study_object.get("ParticipantObjectID") == study


def test_a_held_study_is_refused_when_the_deletion_is_asked_for_not_at_approval(guarded) -> None:  # type: ignore[no-untyped-def]
    daemon, first, _ = guarded
    study = identity(0)["StudyInstanceUID"]
    held = run_cli(daemon.target, "hold", "add", study, "--reason", "litigation 2026-117")
    assert held.returncode == 0, held.stderr
    with PacsvaultClient(daemon.target, token=first) as ana:
        with pytest.raises(grpc.RpcError) as caught:
            ana.delete_study(study, "retention period over")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "legal hold" in caught.value.details() and "litigation 2026-117" in caught.value.details()
        assert ana.study_deletion_requests() == [], "no request is left waiting for an approval that must fail"


def test_without_the_setting_one_admin_deletes(daemon: Daemon) -> None:
    with daemon.client() as local:
        assert local.store(dicom_bytes(**identity(5))).ok
        done = local.delete_study(identity(5)["StudyInstanceUID"], "wrong patient")
        assert done.instances_deleted == 1 and not done.approval_request_id


def test_an_index_rebuild_names_an_approved_deletion_with_both_admins(guarded) -> None:  # type: ignore[no-untyped-def]
    daemon, first, second = guarded
    study = identity(0)["StudyInstanceUID"]
    with PacsvaultClient(daemon.target, token=first) as ana:
        asked = ana.delete_study(study, "retention period over")
    with PacsvaultClient(daemon.target, token=second) as bo:
        assert bo.approve_study_deletion(asked.approval_request_id).study_instance_uid == study
    daemon.stop()
    shutil.rmtree(daemon.data_dir / "index")
    done = rebuild(daemon)
    assert done.returncode == 0, done.stdout + done.stderr
    named = [line.strip() for line in done.stdout.splitlines() if line.startswith("  pacsvault ")]
    assert len(named) == 1 and named[0].startswith(
        f"pacsvault delete {study} --level study --reason 'retention period over' --yes"
        f"    # deleted by {FIRST}, approved by {SECOND} "), done.stdout
