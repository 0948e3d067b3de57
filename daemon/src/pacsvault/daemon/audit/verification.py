"""``audit verify``: the whole chain against every checkpoint, the local ones and the witness's.

When the appliance has a witness (its peer, with replication on), a
verification that could not ask it is not a pass: a trail cut together with
its local checkpoints looks whole from here, and only the witness remembers
how far it reached. Every problem found is also raised as a security alert.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from pacsvault.daemon.audit.alerts import AlertKind, AlertSink
from pacsvault.daemon.audit.chain import Problem
from pacsvault.daemon.audit.checkpoints import read_checkpoints
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.errors import Unavailable

__all__ = ["AuditVerification", "Verification"]


@dataclass(frozen=True)
class Verification:
    records: int
    problem: Problem | None  # the first bad record; None when nothing is wrong with what was checked
    local_checkpoints: int
    witness_checkpoints: int
    peer_consulted: bool
    witness_error: str = ""

    @property
    def intact(self) -> bool:
        """Whole, and checked against everything it should be: a witness that could not be asked is no pass."""
        return self.problem is None and not self.witness_error


class AuditVerification:
    def __init__(self, trail: AuditTrail, witness: Callable[[], list[str]] | None, alerts: AlertSink) -> None:
        """``witness`` lists every checkpoint the peer keeps (None: this appliance has no witness)."""
        self._trail, self._witness, self._alerts = trail, witness, alerts

    def verify(self) -> Verification:
        local = read_checkpoints(self._trail.checkpoints_path)
        witnessed, error = self._witnessed()
        problem = self._trail.verify(local + witnessed)
        records = self._trail.line_count()
        if problem is not None:
            self._alerts.alert(AlertKind.AUDIT_CHAIN_BROKEN, f"audit verify: record {problem.seq}: {problem.reason}",
                               bad_record=problem.seq, outcome="DATA_LOSS")
        return Verification(records, problem, len(local), len(witnessed),
                            peer_consulted=self._witness is not None and not error, witness_error=error)

    def _witnessed(self) -> tuple[list[dict[str, object]], str]:
        if self._witness is None:
            return [], ""
        try:
            listed = self._witness()
        except Unavailable as exc:
            return [], str(exc)
        found = []
        for text in listed:
            try:
                checkpoint = json.loads(text)
            except ValueError:
                continue  # not a checkpoint: it vouches for nothing (a real one is signed, see chain)
            if isinstance(checkpoint, dict):
                found.append(checkpoint)
        return found, ""
