"""At every start, before anything appends: does the trail still reach what was vouched for?

The back office compares the end of its trail with the newest checkpoints,
its own and its witness's (only validly signed ones count):

* A checkpoint numbered past the trail's end means the tail was cut while
  the appliance was down (its local checkpoints above the cut may be gone
  too; the witness's are not). That is recorded as a *resumption* record
  (``chain``), numbered past every vouched number, and is a security alert
  (AuditChainBroken): no number a checkpoint vouched for is ever used again
  for another record, so the witness is never handed a conflicting
  checkpoint, and ``audit verify`` names the first lost record, not a good
  record that happens to carry a vouched number.
* A checkpoint at or below the end whose tag is not the record's: the trail
  was rewritten there; an alert too.

Checkpoints are held (none made) until this check has been done against the
witness, because until then nobody knows which numbers are in doubt. When the
witness cannot be reached at start, the appliance serves anyway (it must)
and the check is retried in the background; a cut found then is recorded the
same way, past the records written meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from pacsvault.daemon.audit.alerts import AlertKind, AlertSink
from pacsvault.daemon.audit.chain import RESUMED, tags_at
from pacsvault.daemon.audit.checkpoints import read_checkpoints, seq_of, signature_valid
from pacsvault.daemon.audit.trail import AuditTrail
from pacsvault.daemon.errors import Unavailable

__all__ = ["TailCheck"]

log = logging.getLogger(__name__)
_RETRY_S = (0.5, 60.0)  # first and longest wait between tries while the witness is away


class TailCheck:
    def __init__(self, trail: AuditTrail, witness: Callable[[int, bool], list[str]] | None,
                 alerts: AlertSink) -> None:
        """``witness(min_seq, wait)``: the witness's checkpoints numbered ``min_seq`` and later (None: no
        witness); ``wait``: whether to wait a while for a peer that is not reachable yet.

        Takes the trail's end now: build it before any other process appends.
        """
        self._trail, self._witness, self._alerts = trail, witness, alerts
        self.start_seq, _ = trail.durable_tail()
        self.done = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        trail.hold_checkpoints()

    def run_once(self, wait: bool = True) -> bool:
        """One try; True once the check is done (then checkpoints go on).

        The try at start does not ``wait``: when both sites start at once (after a power cut),
        each would hold its start-up waiting for the other's witness, which is not listening yet.
        """
        if self.done:
            return True
        damaged = self._trail.damaged_tail
        if damaged:
            self._alerts.alert(AlertKind.AUDIT_CHAIN_BROKEN, f"at this start, the trail's newest record {damaged}; "
                               "run `pacsvault audit verify`", outcome="DATA_LOSS")
            self._trail.damaged_tail = ""  # said once
        local = self._valid(read_checkpoints(self._trail.checkpoints_path))
        base = max((seq for c in local if (seq := seq_of(c)) is not None and seq <= self.start_seq), default=0)
        witnessed: list[dict[str, object]] = []
        if self._witness is not None:
            try:
                witnessed = self._valid(_parsed(self._witness(base, wait)))
            except Unavailable as exc:
                log.warning("audit trail: its tail is not checked against the witness yet (%s); checkpoints wait "
                            "until it is", exc)
                return False
        newest = [c for c in local + witnessed if (seq_of(c) or 0) >= base]
        vouched = max((seq_of(c) or 0 for c in newest), default=0)
        if vouched > self.start_seq:
            self._record_cut(vouched)
        elif not damaged:  # a damaged newest record disagrees with its checkpoint: said above already
            self._compare(newest)
        self.done = True
        self._trail.release_checkpoints()
        return True

    def start(self) -> None:
        """Retries in the background until done (the witness was away at start)."""
        if self.done or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._retry, name="audit-tail-check", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _retry(self) -> None:
        wait = _RETRY_S[0]
        while not self._stop.wait(wait):
            try:
                if self.run_once():
                    log.info("audit trail: tail checked against the witness; checkpoints resume")
                    return
            except Exception:  # noqa: BLE001 - retried; the trail goes on meanwhile
                log.exception("audit trail: tail check failed")
            wait = min(wait * 2, _RETRY_S[1])

    def _valid(self, checkpoints: list[dict[str, object]]) -> list[dict[str, object]]:
        """Only what this appliance signed counts: anyone can claim a number."""
        key = self._trail.public_key
        return [c for c in checkpoints if signature_valid(c, key)]

    def _record_cut(self, vouched: int) -> None:
        after = self.start_seq
        summary = (f"the trail ended at record {after} at this start, but a checkpoint vouched for record "
                   f"{vouched}: records {after + 1}..{vouched} were cut off while the appliance was down")
        seq = self._trail.append_after({
            "action": RESUMED, "phase": "alert", "alert": AlertKind.AUDIT_CHAIN_BROKEN.value, "outcome": "DATA_LOSS",
            "cut_after": after, "vouched": vouched, "summary": summary,
        }, vouched)
        log.error("security alert %s: %s; recorded as record %d, new records follow it",
                  AlertKind.AUDIT_CHAIN_BROKEN.value, summary, seq)

    def _compare(self, checkpoints: list[dict[str, object]]) -> None:
        wanted = {seq for c in checkpoints if (seq := seq_of(c)) is not None and seq > 0}
        tags = tags_at(self._trail.path, self._trail.codec, wanted)
        for checkpoint in checkpoints:
            seq = seq_of(checkpoint)
            if seq and tags.get(seq) != checkpoint["tag"]:
                self._alerts.alert(AlertKind.AUDIT_CHAIN_BROKEN,
                                   f"at this start, record {seq} of the trail is not the one a checkpoint vouched "
                                   "for (rewritten); run `pacsvault audit verify`", bad_record=seq,
                                   outcome="DATA_LOSS")
                return


def _parsed(texts: list[str]) -> list[dict[str, object]]:
    found = []
    for text in texts:
        try:
            checkpoint = json.loads(text)
        except ValueError:
            continue
        if isinstance(checkpoint, dict):
            found.append(checkpoint)
    return found
