"""What health must say beyond volumes and disks: each function gives (state, reason) pairs.

The failure classes a storage engineer tried and health missed (issue 15):
a frozen or failing peer, replicas the peer cannot rebuild (and those this
appliance cannot rebuild for it), a full index, blobs found damaged and
not repaired, reads that failed their integrity check.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pacsvault.daemon.index import integrity_books, replicas
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.replication.manager import ReplicationStatus

Concern = tuple[str, str]
# A read that failed its integrity check keeps health at warning this long, repaired or not.
READ_FAILURE_MEMORY_S = 24 * 3600.0


def replication(status: Callable[[], ReplicationStatus]) -> Callable[[], list[Concern]]:
    def concerns() -> list[Concern]:
        s = status()
        found: list[Concern] = []
        if s.state in ("stalled", "unreachable", "backing-off"):
            what = {"stalled": "stalled: it accepts connections but answers nothing",
                    "unreachable": "unreachable", "backing-off": "failing"}[s.state]
            found.append(("warning", f"replication to {s.peer}: the peer is {what} ({s.last_error}); "
                                     f"{s.pending_entries} changes wait"))
        if s.peer_lost:
            found.append(("warning", f"the peer {s.peer} cannot rebuild {s.peer_lost} replicas of this appliance's "
                                     "instances; they are being sent again"))
        return found
    return concerns


def kept_for_peer(env: IndexEnvironment, peer: str) -> Callable[[], list[Concern]]:
    def concerns() -> list[Concern]:
        lost = replicas.lost_count(env)
        if not lost:
            return []
        return [("warning", f"{lost} replicas kept for the peer {peer} cannot be rebuilt here (fewer than k good "
                            f"shards); {peer} is told and sends them again")]
    return concerns


def index(env: IndexEnvironment) -> Callable[[], list[Concern]]:
    def concerns() -> list[Concern]:
        usage = env.usage()
        if not usage.exhausted:
            return []
        return [("critical", f"the index is full ({usage.percent:.0f}% of index.map_size_bytes, the rest kept for "
                             "deletes and repairs): stores are refused; delete studies or raise "
                             "index.map_size_bytes")]
    return concerns


def stored_data(env: IndexEnvironment, clock: Callable[[], float] = time.time) -> Callable[[], list[Concern]]:
    def concerns() -> list[Concern]:
        found: list[Concern] = []
        problems = integrity_books.problems(env, limit=3)
        total = integrity_books.problem_count(env)
        if total:
            named = "; ".join(f"{p.kind} blob of instance {', '.join(p.sop_instance_uids[:2]) or '(none)'} of study "
                              f"{p.study_instance_uid or '(unknown)'}" for p in problems)
            found.append(("critical", f"{total} stored blobs are damaged or missing and could not be repaired "
                                      f"({named}{', ...' if total > len(problems) else ''}); "
                                      "`pacsvault scrub status` lists them"))
        reads = integrity_books.read_failures(env)
        if reads.count and clock() - reads.last_at < READ_FAILURE_MEMORY_S:
            found.append(("warning", f"{reads.count} reads failed their integrity check (DATA_LOSS) since first use, "
                                     f"the last {clock() - reads.last_at:.0f}s ago ({reads.repaired} repaired from "
                                     "the peer)"))
        return found
    return concerns


