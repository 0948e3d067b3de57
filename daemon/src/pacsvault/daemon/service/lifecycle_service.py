"""pacsvault.v1.LifecycleService: legal holds, series and instance deletion, undelete, the trash."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pacsvault.daemon.deletion import Deleted, Deletion
from pacsvault.daemon.errors import InvalidInput
from pacsvault.daemon.index.records import LegalHold
from pacsvault.daemon.lifecycle import Lifecycle
from pacsvault.daemon.security.scope import current_principal
from pacsvault.daemon.service.status import mapped
from pacsvault.v1 import lifecycle_pb2, lifecycle_pb2_grpc


class LifecycleServicer(lifecycle_pb2_grpc.LifecycleServiceServicer):
    def __init__(self, lifecycle: Lifecycle, deletion: Deletion) -> None:
        self._lifecycle, self._deletion = lifecycle, deletion

    @mapped
    def AddLegalHold(self, request: lifecycle_pb2.AddLegalHoldRequest,
                     context: grpc.ServicerContext) -> lifecycle_pb2.AddLegalHoldResponse:
        hold = self._lifecycle.add_hold(request.study_instance_uid, request.reason, caller())
        return lifecycle_pb2.AddLegalHoldResponse(hold=hold_to_proto(hold))

    @mapped
    def RemoveLegalHold(self, request: lifecycle_pb2.RemoveLegalHoldRequest,
                        context: grpc.ServicerContext) -> lifecycle_pb2.RemoveLegalHoldResponse:
        self._lifecycle.remove_hold(request.study_instance_uid, request.reason)
        return lifecycle_pb2.RemoveLegalHoldResponse()

    @mapped
    def ListLegalHolds(self, request: lifecycle_pb2.ListLegalHoldsRequest,
                       context: grpc.ServicerContext) -> lifecycle_pb2.ListLegalHoldsResponse:
        return lifecycle_pb2.ListLegalHoldsResponse(holds=[hold_to_proto(h) for h in self._lifecycle.holds()])

    @mapped
    def DeleteSeries(self, request: lifecycle_pb2.DeleteSeriesRequest,
                     context: grpc.ServicerContext) -> lifecycle_pb2.DeleteSeriesResponse:
        deleted = self._deletion.delete("series", request.series_instance_uid, request.reason, caller())
        response = lifecycle_pb2.DeleteSeriesResponse(instances_deleted=deleted.instances,
                                                      blobs_destroyed=deleted.blobs_destroyed)
        set_purge_time(response, deleted)
        return response

    @mapped
    def DeleteInstance(self, request: lifecycle_pb2.DeleteInstanceRequest,
                       context: grpc.ServicerContext) -> lifecycle_pb2.DeleteInstanceResponse:
        deleted = self._deletion.delete("instance", request.sop_instance_uid, request.reason, caller())
        response = lifecycle_pb2.DeleteInstanceResponse(instances_deleted=deleted.instances,
                                                        blobs_destroyed=deleted.blobs_destroyed)
        set_purge_time(response, deleted)
        return response

    @mapped
    def Undelete(self, request: lifecycle_pb2.UndeleteRequest,
                 context: grpc.ServicerContext) -> lifecycle_pb2.UndeleteResponse:
        named = [(level, value) for level, value in (("study", request.study_instance_uid),
                                                     ("series", request.series_instance_uid),
                                                     ("instance", request.sop_instance_uid)) if value]
        if len(named) != 1:
            raise InvalidInput("name exactly one of study_instance_uid, series_instance_uid and sop_instance_uid: "
                               "what the delete named")
        restored = self._lifecycle.undelete(*named[0])
        return lifecycle_pb2.UndeleteResponse(instances_restored=restored.restored,
                                              instances_superseded=restored.superseded)

    @mapped
    def ListDeleted(self, request: lifecycle_pb2.ListDeletedRequest,
                    context: grpc.ServicerContext) -> lifecycle_pb2.ListDeletedResponse:
        items = []
        for item in self._lifecycle.deleted():
            g = item.group
            items.append(lifecycle_pb2.DeletedItem(
                level=g.level, uid=g.uid, study_instance_uid=g.study_instance_uid, instances=g.instances,
                reason=g.reason, deleted_by=g.deleted_by, deleted=timestamp(g.trashed_at),
                purge_time=timestamp(g.purge_after), held=item.held))
        return lifecycle_pb2.ListDeletedResponse(items=items)


def caller() -> str:
    principal = current_principal.get()
    return principal.id if principal is not None else ""


def hold_to_proto(hold: LegalHold) -> lifecycle_pb2.LegalHold:
    return lifecycle_pb2.LegalHold(study_instance_uid=hold.study_instance_uid, reason=hold.reason,
                                   placed_by=hold.placed_by, placed=timestamp(hold.placed_at))


def set_purge_time(response: object, deleted: Deleted) -> None:
    if deleted.purge_after is not None:
        response.purge_time.CopyFrom(timestamp(deleted.purge_after))  # type: ignore[attr-defined]


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
