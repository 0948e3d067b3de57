"""pacsvault.v1.AuditService: verify and search the audit trail (auditor role)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc

from pacsvault.daemon.audit import trail as audit_trail
from pacsvault.daemon.audit.verification import AuditVerification
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import audit_pb2, audit_pb2_grpc

_OFF = "auditing is off on this appliance ([audit] enabled = false)"


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trail: audit_trail.AuditTrail | None, verification: AuditVerification | None) -> None:
        self._audit, self._verification = trail, verification

    def _trail(self) -> audit_trail.AuditTrail:
        if self._audit is None:
            raise Unavailable(_OFF)
        return self._audit

    @mapped
    def VerifyAudit(self, request: audit_pb2.VerifyAuditRequest,
                    context: grpc.ServicerContext) -> audit_pb2.VerifyAuditResponse:
        if self._verification is None:
            raise Unavailable(_OFF)
        result = self._verification.verify()
        problem = result.problem
        reason = problem.reason if problem else ""
        if result.witness_error:
            reason = (f"the witness could not be asked ({result.witness_error}): a cut tail cannot be ruled out"
                      + (f"; the chain alone breaks at record {problem.seq}: {problem.reason}" if problem
                         else f"; the {result.records} records here are whole on their own"))
        return audit_pb2.VerifyAuditResponse(
            intact=result.intact, records=result.records, first_bad_record=problem.seq if problem else 0,
            problem=reason, local_checkpoints=result.local_checkpoints,
            witness_checkpoints=result.witness_checkpoints, witness_error=result.witness_error,
            peer_consulted=result.peer_consulted)

    @mapped
    def QueryAudit(self, request: audit_pb2.QueryAuditRequest,
                   context: grpc.ServicerContext) -> Iterator[audit_pb2.QueryAuditResponse]:
        trail = self._trail()
        for record in trail.read_records():  # opened here when sealed; the answer travels over TLS
            if _matches(record, request):
                yield audit_pb2.QueryAuditResponse(record_json=json.dumps(record, sort_keys=True, ensure_ascii=False))


def _matches(record: dict[str, object], request: audit_pb2.QueryAuditRequest) -> bool:
    when = float(record.get("time", 0))  # type: ignore[arg-type]
    return ((not request.patient_id or record.get("patient_id") == request.patient_id)
            and (not request.study_instance_uid or record.get("study_instance_uid") == request.study_instance_uid)
            and (not request.principal or record.get("principal") == request.principal)
            and (not request.since or when >= request.since)
            and (not request.until or when <= request.until))
