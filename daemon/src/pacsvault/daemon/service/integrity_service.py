"""pacsvault.v1.IntegrityService: the local scrub and the consistency check, for operators
(served by the back office; serving processes forward)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pacsvault.daemon.config import ScrubConfig
from pacsvault.daemon.index import integrity_books
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import IntegrityProblem
from pacsvault.daemon.integrity.check import Checker, Finding
from pacsvault.daemon.integrity.scrub import ScrubRunner
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import integrity_pb2, integrity_pb2_grpc

# Findings per streamed message.
_PAGE = 200


class IntegrityServicer(integrity_pb2_grpc.IntegrityServiceServicer):
    def __init__(self, env: IndexEnvironment, config: ScrubConfig, scrub: ScrubRunner, checker: Checker) -> None:
        self._env, self._config, self._scrub, self._checker = env, config, scrub, checker

    @mapped
    def GetScrubStatus(self, request: integrity_pb2.GetScrubStatusRequest,
                       context: grpc.ServicerContext) -> integrity_pb2.GetScrubStatusResponse:
        s = integrity_books.scrub_state(self._env)
        scrubbing = bool(s.pass_started_at) and not s.idle
        with self._env.read() as txn:
            indexed = txn.stat(self._env.dbs["blobs"])["entries"]
        response = integrity_pb2.GetScrubStatusResponse(
            enabled=self._config.enabled,
            state="disabled" if not self._config.enabled else "scrubbing" if scrubbing else "idle",
            pass_blobs_checked=s.pass_blobs_checked if scrubbing else 0,
            pass_bytes_checked=s.pass_bytes_checked if scrubbing else 0, blobs_indexed=indexed,
            passes_completed=s.passes_completed, found=s.found, repaired=s.repaired, unrepairable=s.unrepairable,
            max_bytes_per_second=self._config.max_bytes_per_s, interval_seconds=self._config.interval_s,
            problems=[_problem(p) for p in integrity_books.problems(self._env, limit=1000)])
        if s.pass_started_at:
            response.pass_started.CopyFrom(_time(s.pass_started_at))
            if s.idle:
                response.next_pass.CopyFrom(_time(s.pass_started_at + self._config.interval_s))
        if s.last_pass_completed_at:
            response.last_full_pass.CopyFrom(_time(s.last_pass_completed_at))
        return response

    @mapped
    def StartScrub(self, request: integrity_pb2.StartScrubRequest,
                   context: grpc.ServicerContext) -> integrity_pb2.StartScrubResponse:
        return integrity_pb2.StartScrubResponse(started=self._scrub.request())

    @mapped
    def CheckIntegrity(self, request: integrity_pb2.CheckIntegrityRequest,
                       context: grpc.ServicerContext) -> Iterator[integrity_pb2.CheckIntegrityResponse]:
        yield from _stream(self._checker.check, integrity_pb2.CheckIntegrityResponse, context)

    @mapped
    def RepairIntegrity(self, request: integrity_pb2.RepairIntegrityRequest,
                        context: grpc.ServicerContext) -> Iterator[integrity_pb2.RepairIntegrityResponse]:
        yield from _stream(self._checker.repair, integrity_pb2.RepairIntegrityResponse, context)


def _stream(run: Callable[[], object], response: type, context: grpc.ServicerContext) -> Iterator:  # type: ignore[type-arg]
    report = run()
    findings: list[Finding] = report.findings  # type: ignore[attr-defined]
    for at in range(0, len(findings), _PAGE):
        if not context.is_active():
            return
        yield response(findings=[_finding(f) for f in findings[at : at + _PAGE]])
    last = response(counts=report.counts, done=True, blobs_examined=report.blobs_examined,  # type: ignore[attr-defined]
                    files_examined=report.files_examined)  # type: ignore[attr-defined]
    if hasattr(last, "left"):
        last.left = report.left  # type: ignore[attr-defined]
    yield last


def _finding(f: Finding) -> integrity_pb2.Finding:
    return integrity_pb2.Finding(kind=f.kind, subject=f.subject, detail=f.detail, action=f.action)


def _problem(p: IntegrityProblem) -> integrity_pb2.IntegrityProblem:
    problem = integrity_pb2.IntegrityProblem(
        digest=p.digest.hex(), volume_id=p.volume_id, tier=p.tier, kind=p.kind, reason=p.reason,
        study_instance_uid=p.study_instance_uid, sop_instance_uids=list(p.sop_instance_uids))
    problem.found.CopyFrom(_time(p.found_at))
    return problem


def _time(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
