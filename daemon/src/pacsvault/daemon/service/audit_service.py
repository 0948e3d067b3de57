"""pacsvault.v1.AuditService: verify and search the audit trail (auditor role)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc

from pacsvault.daemon.audit import trail as audit_trail
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.replication.peer_client import PeerClient
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import audit_pb2, audit_pb2_grpc


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trail: audit_trail.AuditTrail | None, witness: PeerClient | None) -> None:
        self._audit, self._witness = trail, witness

    def _trail(self) -> audit_trail.AuditTrail:
        if self._audit is None:
            raise Unavailable("auditing is off on this appliance ([audit] enabled = false)")
        return self._audit

    @mapped
    def VerifyAudit(self, request: audit_pb2.VerifyAuditRequest,
                    context: grpc.ServicerContext) -> audit_pb2.VerifyAuditResponse:
        trail = self._trail()
        local = audit_trail.read_checkpoints(trail.checkpoints_path)
        witness, witness_error = [], ""
        if self._witness is not None:
            try:
                witness = [json.loads(c) for c in self._witness.list_audit_checkpoints()]
            except grpc.RpcError as exc:
                witness_error = f"{exc.code().name}: {exc.details()}"
        problem = trail.verify(local + witness)
        records = trail.line_count()
        return audit_pb2.VerifyAuditResponse(
            intact=problem is None, records=records, first_bad_record=problem.seq if problem else 0,
            problem=problem.reason if problem else "", local_checkpoints=len(local),
            witness_checkpoints=len(witness), witness_error=witness_error)

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
