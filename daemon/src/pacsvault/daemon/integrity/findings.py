"""What becomes of a bad blob the scrub found: the books, a health event, the audit trail, the log.

* The integrity books count it (found, repaired, unrepairable: ``/metrics`` and
  ``pacsvault scrub status``); one not repaired stays listed as a problem
  naming its study and instances, and health is CRITICAL until it is gone.
* A health event (``stored_data``) goes to every WatchHealth stream.
* A sealed blob that failed authentication may have been tampered with: a
  security alert (ATNA 110113) per instance, as a read that found it would.
* One that could not be repaired is an alert of its own naming the patient,
  the study and the instances (``StoredDataUnrepairable``), in the audit
  trail (sealed) and so at the ATNA repositories; the log names study and
  instances only (no patient identifiers in logs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pacsvault.daemon.audit.alerts import AlertKind
from pacsvault.daemon.errors import Unavailable
from pacsvault.daemon.index import blob_owners, integrity_books, keys
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import BlobRecord, IntegrityProblem
from pacsvault.daemon.integrity.blob_repair import Repaired

log = logging.getLogger(__name__)

# Publishes a health event: (subject, where, message, bad) -> None.
HealthEvent = Callable[[str, str, str, bool], None]


class Alerts:
    """The audit trail's side: the scrub's findings as security alerts."""

    def __init__(self, trail: object | None) -> None:
        self._trail = trail

    def unauthenticated(self, reason: str, study_uid: str, sop_uid: str) -> None:
        if self._trail is not None:
            self._trail.record_security_alert(reason, study_uid, sop_uid)  # type: ignore[attr-defined]

    def unrepairable(self, reason: str, owners: blob_owners.Owners) -> None:
        if self._trail is None:
            return
        for sop_uid in owners.sop_instance_uids or [""]:
            self._trail.append({  # type: ignore[attr-defined]
                "action": "SecurityAlert", "alert": AlertKind.STORED_DATA_UNREPAIRABLE.value, "phase": "alert",
                "outcome": "DATA_LOSS", "reason": reason[:512], "patient_id": owners.patient_id,
                "issuer_of_patient_id": owners.issuer_of_patient_id,
                "study_instance_uid": owners.study_instance_uid, "sop_instance_uid": sop_uid})


class ScrubFindings:
    def __init__(self, env: IndexEnvironment, alerts: Alerts, health_event: HealthEvent,
                 clock: Callable[[], float] = time.time) -> None:
        self._env, self._alerts, self._event, self._clock = env, alerts, health_event, clock

    def found(self, blob: BlobRecord, kind: str, reason: str, outcome: Repaired) -> None:
        owners = blob_owners.owners(self._env, blob)
        named = f"instance {', '.join(owners.sop_instance_uids) or '(none live)'} of study {owners.study_instance_uid}"
        blob_key = keys.blob_key(blob.digest_function, blob.digest)

        def count(state: object) -> None:
            state.found += 1  # type: ignore[attr-defined]
            if outcome.done:
                state.repaired += 1  # type: ignore[attr-defined]
            else:
                state.unrepairable += 1  # type: ignore[attr-defined]

        integrity_books.update_scrub_state(self._env, count)
        if outcome.done:
            integrity_books.clear_problem(self._env, blob_key)
            log.warning("scrub: %s blob of %s (%s); repaired from %s", kind, named, reason, outcome.how)
        else:
            integrity_books.note_problem(self._env, IntegrityProblem(
                digest_function=blob.digest_function, digest=blob.digest, volume_id=blob.location.volume_id,
                tier=blob.location.tier, kind=kind, reason=f"{reason}; not repaired: {outcome.how}"[:500],
                found_at=self._clock(), study_instance_uid=owners.study_instance_uid,
                sop_instance_uids=owners.sop_instance_uids))
            log.error("scrub: %s blob of %s (%s); NOT repaired: %s", kind, named, reason, outcome.how)
        self._alert(kind, reason, owners, outcome)
        message = (f"{kind} blob of {named} on tier {blob.location.tier}: "
                   + (f"repaired from {outcome.how}" if outcome.done else f"not repaired ({outcome.how})"))
        try:
            self._event(blob.digest.hex(), blob.location.volume_id, message, not outcome.done)
        except Exception:  # noqa: BLE001 - the books and the log have it; the event stream is best effort
            log.exception("scrub: the health event could not be published")

    def _alert(self, kind: str, reason: str, owners: blob_owners.Owners, outcome: Repaired) -> None:
        try:
            if kind == "unauthenticated":
                for sop_uid in owners.sop_instance_uids:
                    self._alerts.unauthenticated(f"scrub: {reason}", owners.study_instance_uid, sop_uid)
            if not outcome.done:
                self._alerts.unrepairable(f"{reason}; not repaired: {outcome.how}", owners)
        except Unavailable:
            log.exception("scrub: the security alert could not be recorded in the audit trail")
