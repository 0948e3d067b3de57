"""What the audit trail says about legal holds and deletions, for an index rebuilt from the blobs.

No blob carries a legal hold or a deletion, so an index rebuilt from the blobs
has neither: held studies are deletable again, and deleted studies still in
the trash are live again. The trail recorded every hold and every deletion
(who, why, its outcome), so the rebuild reads it back and names the holds
still in force and the deletions not undone whose instances are live again,
each with the command that puts it right.

It names them; it does not apply them. A deletion replayed blindly would
also take instances stored again after it, and what goes to the trash is
purged for good at the end of the grace period: which deletion still stands
is for the operator to judge, told which targets were stored again since.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pacsvault.daemon.audit.chain import UNREADABLE
from pacsvault.daemon.errors import NotFound
from pacsvault.daemon.index import trash
from pacsvault.daemon.index.catalog import Catalog

# The level each delete names (its UID is in trash.UID_FIELDS[level] of the record).
_DELETES = {"DeleteStudy": "study", "DeleteSeries": "series", "DeleteInstance": "instance"}
_STORES = frozenset({"StoreInstance", "PutInstance"})


@dataclass(frozen=True)
class RecordedHold:
    study_uid: str
    reason: str
    placed_by: str
    placed_at: float


@dataclass
class RecordedDeletion:
    level: str
    uid: str
    reason: str
    deleted_by: str
    deleted_at: float
    stored_again: bool = False


@dataclass
class TrailLifecycle:
    """Holds in force and deletions not undone, as the trail recorded them, in trail order."""

    holds: dict[str, RecordedHold] = field(default_factory=dict)
    deletions: dict[tuple[str, str], RecordedDeletion] = field(default_factory=dict)
    # Deletions asked for and waiting for a second admin: request id -> (study, reason, asked by).
    requested: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    unreadable: int = 0


def read(records: Iterable[Mapping[str, object]]) -> TrailLifecycle:
    """Replays the outcome records of holds, deletions, undeletes and stores, in trail order."""
    found = TrailLifecycle()
    for record in records:
        if UNREADABLE in record:
            found.unreadable += 1
        elif record.get("phase") == "end" and record.get("outcome") == "OK":
            _apply(found, record)
    return found


def _apply(found: TrailLifecycle, record: Mapping[str, object]) -> None:
    action, when = record.get("action"), float(record.get("time", 0.0))  # type: ignore[arg-type]
    by, reason = str(record.get("principal", "")), str(record.get("reason", ""))
    if action == "AddLegalHold" and record.get("study_instance_uid"):
        study_uid = str(record["study_instance_uid"])
        found.holds[study_uid] = RecordedHold(study_uid, reason, by, when)
    elif action == "RemoveLegalHold":
        found.holds.pop(str(record.get("study_instance_uid", "")), None)
    elif action == "DeleteStudy" and record.get("approval_request_id"):
        # Only asked for: the deletion happens when another admin approves it.
        found.requested[str(record["approval_request_id"])] = (str(record.get("study_instance_uid", "")), reason, by)
    elif action in _DELETES:
        level = _DELETES[str(action)]
        uid_field = trash.UID_FIELDS[level]
        if record.get(uid_field):
            target = (level, str(record[uid_field]))
            found.deletions[target] = RecordedDeletion(*target, reason, by, when)
    elif action == "ApproveStudyDeletion":
        study_uid, reason, asked_by = found.requested.pop(str(record.get("request_id", "")), ("", "", ""))
        study_uid = str(record.get("study_instance_uid", "")) or study_uid
        if study_uid:
            found.deletions[("study", study_uid)] = RecordedDeletion(
                "study", study_uid, reason or "an approved deletion request", f"{asked_by}, approved by {by}", when)
    elif action == "Undelete":  # brings back exactly what one delete named
        target = next(((level, str(record[f])) for level, f in trash.UID_FIELDS.items() if record.get(f)), None)
        if target is not None:
            found.deletions.pop(target, None)
    elif action in _STORES:
        for level, uid_field in trash.UID_FIELDS.items():
            deletion = found.deletions.get((level, str(record.get(uid_field, ""))))
            if deletion is not None:
                deletion.stored_again = True


def advice(found: TrailLifecycle, catalog: Catalog) -> list[str]:
    """Report lines: the commands that put back each hold on a study the rebuilt index holds, and
    repeat each deletion whose instances are live again."""
    lines = []
    holds = [h for h in found.holds.values() if catalog.study(h.study_uid) is not None]
    if holds:
        lines.append(f"the audit trail records {_count(len(holds), 'legal hold')} in force on studies rebuilt "
                     "here; place them again before anything else:")
        lines += [f"  pacsvault hold add {h.study_uid} --reason {shlex.quote(h.reason)}"
                  f"    # placed by {h.placed_by or 'an admin'} {_when(h.placed_at)}" for h in holds]
    live = [d for d in found.deletions.values() if _live(d, catalog)]
    if live:
        lines.append(f"the audit trail records {_count(len(live), 'deletion')}, never undone, whose instances "
                     "are live again; delete them again (the grace period starts anew) unless stored again on "
                     "purpose:")
        for d in live:
            note = "; STORED AGAIN after the deletion: check first" if d.stored_again else ""
            lines.append(f"  pacsvault delete {d.uid} --level {d.level} --reason {shlex.quote(d.reason)} --yes"
                         f"    # deleted by {d.deleted_by or 'an admin'} {_when(d.deleted_at)}{note}")
    if found.unreadable:
        lines.append(f"{_count(found.unreadable, 'audit record')} could not be read (`pacsvault audit verify` "
                     "names them): holds or deletions among them are not listed above")
    return lines


def _live(deletion: RecordedDeletion, catalog: Catalog) -> bool:
    """Whether the rebuilt index holds what the deletion named (a purge destroyed the blobs of the rest)."""
    try:
        if deletion.level == "study":
            return catalog.study(deletion.uid) is not None
        if deletion.level == "series":
            return bool(catalog.series_instances(deletion.uid))
        catalog.instance(deletion.uid)
        return True
    except NotFound:
        return False


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at)) if at else "(time not recorded)"
