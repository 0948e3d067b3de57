"""The order a study is read in: series by series, each by InstanceNumber as a number.

The index keeps a series' instances under their SOP Instance UIDs, whose
order means nothing to a reader ("1.2.10" before "1.2.9"); viewers and
scripts expect slice 2 before slice 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pacsvault.daemon.index.records import InstanceRecord

T = TypeVar("T")


def in_reading_order(members: Sequence[tuple[InstanceRecord, T]]) -> list[tuple[InstanceRecord, T]]:
    """Series stay in the order given (the index's); within each, InstanceNumber ascending,
    instances without a usable number last, ties by SOP Instance UID."""
    series_rank: dict[str, int] = {}
    for instance, _ in members:
        series_rank.setdefault(instance.series_instance_uid, len(series_rank))

    def key(member: tuple[InstanceRecord, T]) -> tuple[int, int, float, str]:
        instance = member[0]
        try:
            number, missing = float(instance.instance_number), 0
        except ValueError:
            number, missing = 0.0, 1
        return series_rank[instance.series_instance_uid], missing, number, instance.sop_instance_uid

    return sorted(members, key=key)
