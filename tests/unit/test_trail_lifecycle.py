"""Holds and deletions read back from audit records (the rebuild's report; the records as the
recorder writes them: a begin and an end per call, the end carrying the outcome)."""

from __future__ import annotations

from pacsvault.daemon.audit.chain import UNREADABLE
from pacsvault.daemon.integrity import trail_lifecycle

ADMIN = "spiffe://pacsvault/client/admin"


def end(action: str, at: float, outcome: str = "OK", **fields: object) -> dict[str, object]:
    return {"action": action, "phase": "end", "outcome": outcome, "principal": ADMIN, "time": at, **fields}


def test_only_what_succeeded_and_was_not_undone_stands() -> None:
    found = trail_lifecycle.read([
        {"action": "AddLegalHold", "phase": "begin", "study_instance_uid": "1.1", "reason": "x", "time": 1.0},
        end("AddLegalHold", 1.0, study_instance_uid="1.1", reason="litigation"),
        end("AddLegalHold", 2.0, study_instance_uid="1.2", reason="audit"),
        end("RemoveLegalHold", 3.0, study_instance_uid="1.2", reason="closed"),
        end("AddLegalHold", 4.0, outcome="NOT_FOUND", study_instance_uid="9.9", reason="typo"),
        end("DeleteStudy", 5.0, study_instance_uid="2.1", reason="wrong patient"),
        end("DeleteSeries", 6.0, series_instance_uid="2.2.1", reason="rejected"),
        end("Undelete", 7.0, series_instance_uid="2.2.1"),
        end("DeleteSeries", 8.0, series_instance_uid="2.2.1", reason="rejected again"),
        end("DeleteInstance", 9.0, outcome="FAILED_PRECONDITION", sop_instance_uid="2.3.1.1", reason="held"),
        {UNREADABLE: 12, "problem": "is not a sealed record"},
    ])
    assert {uid: h.reason for uid, h in found.holds.items()} == {"1.1": "litigation"}
    assert {k: (d.reason, d.deleted_at) for k, d in found.deletions.items()} == {
        ("study", "2.1"): ("wrong patient", 5.0), ("series", "2.2.1"): ("rejected again", 8.0)}
    assert found.unreadable == 1


def test_an_approved_deletion_carries_the_first_admins_reason_and_both_names() -> None:
    found = trail_lifecycle.read([
        end("DeleteStudy", 1.0, study_instance_uid="3.1", reason="retention over", approval_request_id="r1"),
        end("DeleteStudy", 2.0, study_instance_uid="3.2", reason="never approved", approval_request_id="r2"),
        {**end("ApproveStudyDeletion", 3.0, request_id="r1", study_instance_uid="3.1", requested_by=ADMIN),
         "principal": "spiffe://pacsvault/client/second"},
    ])
    assert list(found.deletions) == [("study", "3.1")], "a request alone deletes nothing"
    deletion = found.deletions[("study", "3.1")]
    assert (deletion.reason, deletion.deleted_by) == ("retention over", f"{ADMIN}, approved by "
                                                                        "spiffe://pacsvault/client/second")


def test_a_target_stored_again_after_its_deletion_is_marked_and_one_stored_before_is_not() -> None:
    found = trail_lifecycle.read([
        end("PutInstance", 1.0, sop_instance_uid="4.1.1.1", series_instance_uid="4.1.1", study_instance_uid="4.1"),
        end("DeleteStudy", 2.0, study_instance_uid="4.1", reason="duplicate"),
        end("DeleteStudy", 3.0, study_instance_uid="4.2", reason="test"),
        end("StoreInstance", 4.0, sop_instance_uid="4.1.1.1", series_instance_uid="4.1.1", study_instance_uid="4.1"),
    ])
    assert found.deletions[("study", "4.1")].stored_again
    assert not found.deletions[("study", "4.2")].stored_again
