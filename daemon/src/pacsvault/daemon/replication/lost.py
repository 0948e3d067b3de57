"""Replicas the peer cannot rebuild, seen from both sides.

At the appliance that keeps the shards: its scrub finds a blob with fewer
than k good shards; the instances of the peer naming it are marked lost
(``index.replicas.note_lost``) and listed to the peer when it asks
(PeerService.ListLostReplicas), until a new copy is committed.

At the appliance that owns the data (``resend_lost``): the peer's list
comes with every liveness probe; each instance on it that is still here is
queued for replication again (its shards are sent afresh: the peer sets the
bad ones aside at the commit), and kept in ``peer_lost`` so health can say
so until the peer has a good copy.
"""

from __future__ import annotations

import time

from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.index import peer_lost
from pacsvault.daemon.index.lmdb_env import IndexEnvironment
from pacsvault.daemon.index.records import LegalHold, LostReplica
from pacsvault.daemon.service.convert import digest_to_proto
from pacsvault.v1 import peer_pb2


def lost_to_proto(record: LostReplica) -> peer_pb2.LostReplica:
    name = Digest(DigestFunction.BLAKE3, record.digest, record.size_bytes)
    return peer_pb2.LostReplica(sop_instance_uid=record.sop_instance_uid, digest=digest_to_proto(name),
                                reported_at=record.reported_at, reason=record.reason)


def peer_hold(request: peer_pb2.SetLegalHoldRequest, origin: str) -> LegalHold:
    return LegalHold(study_instance_uid=request.study_instance_uid, reason=request.reason[:500],
                     placed_by=f"peer:{origin}", placed_at=time.time())


def resend_lost(env: IndexEnvironment, reported: list[peer_pb2.LostReplica], now: float) -> int:
    """Queues each reported instance still here for replication again (once per report);
    forgets those the peer no longer reports. Returns how many were queued now."""
    wanted = {r.sop_instance_uid: LostReplica(sop_instance_uid=r.sop_instance_uid,
                                              digest=bytes.fromhex(r.digest.hash) if r.digest.hash else b"",
                                              size_bytes=r.digest.size_bytes, reported_at=r.reported_at,
                                              reason=r.reason[:500])
              for r in reported}
    return peer_lost.reconcile(env, wanted, now)
