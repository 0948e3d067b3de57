"""What serving processes tell tiering: which studies were read, and which should come back up.

Reads are many and their exact times matter little (they order demotion,
whose unit is days), so each serving process gathers them and writes them to
the index in one transaction every ``tiering.access_flush_interval_s`` and when
it stops; the mover, in the back office, reads them from there. A process
killed in between loses at most that window of read times; a study read from
a lower tier is asked for again by its next read.

Pins and prefetches are rarer and explicit: they go to the index at once.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from pacsvault.daemon.dicom import uid
from pacsvault.daemon.errors import InvalidInput, NotFound, shown
from pacsvault.daemon.index import placement
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.query import Match
from pacsvault.daemon.index.records import BlobRecord, StudyRecord


class ReadRecorder:
    """Gathers reads in memory until the next flush (see the module docstring)."""

    def __init__(self, env: IndexEnvironment, first_tier: str, promote_on_access: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self._env, self._first_tier, self._promote, self._clock = env, first_tier, promote_on_access, clock
        self._lock = threading.Lock()
        self._reads: dict[str, float] = {}
        self._promotions: set[str] = set()

    def note(self, study_uid: str, blobs: Iterable[BlobRecord]) -> None:
        """A read of the study; a study read from a lower tier comes back up."""
        below = self._promote and any(b.location.tier != self._first_tier for b in blobs)
        with self._lock:
            self._reads[study_uid] = self._clock()
            if below:
                self._promotions.add(study_uid)

    def flush(self) -> int:
        """Writes what was gathered in one transaction; returns how many studies."""
        with self._lock:
            reads, promotions = self._reads, self._promotions
            self._reads, self._promotions = {}, set()
        if reads or promotions:
            placement.record_reads(self._env, reads, promotions)
        return len(reads)


class ClinicalRequests:
    """What clinicians ask of tiering: a study kept on the first tier, a patient's priors brought up."""

    def __init__(self, env: IndexEnvironment, search: PatientStudies, first_tier: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._env, self._search, self._first_tier, self._clock = env, search, first_tier, clock

    def pin(self, study_uid: str, until: str) -> StudyRecord:
        return pin(self._env, uid.check(study_uid, "study_instance_uid"), until, self._clock())

    def prefetch(self, patient_id: str, issuer: str) -> tuple[int, int]:
        """Brings every study of the patient to the first tier; returns (studies, bytes) queued."""
        studies = [m.study for m in self._search.all_patient_studies(patient_id, issuer) if m.study is not None]
        return prefetch(self._env, studies, self._first_tier, self._clock())


class PatientStudies(Protocol):
    def all_patient_studies(self, patient_id: str, issuer: str) -> list[Match]: ...


def pin(env: IndexEnvironment, study_uid: str, until: str, now: float) -> StudyRecord:
    """Keeps a study on the first tier until the end of ``until`` (YYYYMMDD); '' unpins."""
    if until:
        try:
            datetime.datetime.strptime(until, "%Y%m%d")
        except ValueError as exc:
            raise InvalidInput(f"until: {shown(until)} is not a date in YYYYMMDD form") from exc
    study = placement.pin(env, study_uid, until, now)
    if study is None:
        raise NotFound(f"no study with Study Instance UID {study_uid}")
    return study


def prefetch(env: IndexEnvironment, studies: list[StudyRecord], first_tier: str, now: float) -> tuple[int, int]:
    """Asks for the studies not wholly on the first tier to come up; returns (studies, bytes) queued.

    Each counts as read now: a prefetched study is about to be needed, and
    must not be demoted again by an age rule meanwhile.
    """
    queued, size, reads = 0, 0, {}
    for study in studies:
        below = sum(n for tier, n in study.tier_instances.items() if tier != first_tier)
        if below:
            reads[study.study_instance_uid] = now
            queued += 1
            size += study.size_bytes * below // max(1, study.instance_count)
    placement.request_promotions(env, reads)
    return queued, size
