"""pacsvault tiers: storage tiers and volumes; plan, add-volume, drain."""

from __future__ import annotations

import argparse
import json
import sys

from pacsvault.client import PacsvaultClient
from pacsvault.client.cli import exit_codes
from pacsvault.client.cli.output import add_wait_flags, as_json, follow, progress_bar, should_wait
from pacsvault.client.units import human_bytes
from pacsvault.v1 import storage_pb2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("tiers", help="storage tiers and volumes (plan, add-volume, drain)")
    parser.add_argument("--json", action="store_true", help="one JSON object per volume")
    parser.set_defaults(run=run_list)
    actions = parser.add_subparsers(dest="tiers_action", metavar="ACTION")
    plan = actions.add_parser("plan", help="dry run: which studies the mover would move next")
    plan.add_argument("--limit", type=int, default=100)
    plan.add_argument("--json", action="store_true", help="one JSON object per planned move")
    plan.set_defaults(run=run_plan)
    add = actions.add_parser("add-volume", help="take a mounted, empty directory into use in a tier, online")
    add.add_argument("tier")
    add.add_argument("path")
    add.set_defaults(run=run_add)
    drain = actions.add_parser("drain", help="move every blob off a volume so its disk can be replaced")
    drain.add_argument("volume", help="the volume's path or id")
    add_wait_flags(drain, "the drain")
    drain.set_defaults(run=run_drain)
    rebuild = actions.add_parser("rebuild", help="rebuild a lost volume's blobs elsewhere from the peer, with "
                                                 "progress and ETA")
    rebuild.add_argument("volume", help="the volume's path or id")
    add_wait_flags(rebuild, "the rebuild")
    rebuild.set_defaults(run=run_rebuild)


def _volume_json(volume: storage_pb2.Volume) -> dict[str, object]:
    body = as_json(volume)
    body["volume"] = body.pop("volume_id")
    return body


def run_list(args: argparse.Namespace, client: PacsvaultClient) -> int:
    response = client.list_volumes()
    if args.json:
        for volume in response.volumes:
            print(json.dumps(_volume_json(volume)))
        return 0
    print(f"{'TIER':10} {'STATE':9} {'USED':>10} {'FREE':>10} {'BLOBS':>8} {'STORED':>10} {'WATERMARK':11} PATH")
    for v in response.volumes:
        print(f"{v.tier:10} {v.state:9} {human_bytes(v.used_bytes):>10} {human_bytes(v.free_bytes):>10} "
              f"{v.blobs:>8} {human_bytes(v.stored_bytes):>10} {v.watermark:11} {v.path}"
              + (f"  ({v.store_objects} objects, {human_bytes(v.store_bytes)} listed in the store)"
                 if v.HasField("store_objects") else "")
              + (f"  ({v.reason})" if v.reason else ""))
    for r in response.rebuilds:
        print(f"rebuild of {r.path}: {_rebuild_line(r)}")
    m = response.mover
    print(f"mover: {'on' if m.enabled else 'off'}, {m.passes} passes, {m.blobs_moved} blobs / "
          f"{human_bytes(m.bytes_moved)} moved, last pass {human_bytes(int(m.last_pass_bytes_per_second))}/s, "
          f"{m.pending_promotions} promotions pending, {m.interrupted_moves} interrupted moves"
          + (f", last error: {m.last_error}" if m.last_error else ""))
    return 0


def run_plan(args: argparse.Namespace, client: PacsvaultClient) -> int:
    response = client.plan_moves(args.limit)
    if args.json:
        for move in response.moves:
            print(json.dumps(as_json(move)))
        return 0
    for move in response.moves:
        print(f"{move.study_instance_uid}  {move.from_tier} -> {move.to_tier}  "
              f"{human_bytes(move.size_bytes)}  ({move.reason})")
    print(f"{len(response.moves)} moves, {human_bytes(response.total_bytes)} in all (nothing was moved)")
    return 0


def run_add(args: argparse.Namespace, client: PacsvaultClient) -> int:
    volume = client.add_volume(args.tier, args.path)
    print(f"volume {volume.path} ({volume.volume_id}) now takes data in tier {volume.tier}")
    return 0


def run_drain(args: argparse.Namespace, client: PacsvaultClient) -> int:
    volume = client.drain_volume(args.volume)
    print(f"volume {volume.path} is draining: {volume.blobs} blobs ({human_bytes(volume.stored_bytes)}) to move")
    if not should_wait(args):
        print("follow it with `pacsvault tiers` (state `drained` when the disk can go)")
        return exit_codes.OK

    def left() -> tuple[int, bool, str]:
        now = next((v for v in client.list_volumes().volumes if v.volume_id == volume.volume_id), None)
        if now is None:
            return 0, True, "gone"
        return now.blobs, now.state in ("drained", "failed"), now.state

    bar = progress_bar(volume.blobs, "blob", desc="drain")
    try:
        follow(bar, left)
    except KeyboardInterrupt:
        bar.close()
        print("stopped following; the drain goes on (`pacsvault tiers` shows it)", file=sys.stderr)
        return exit_codes.INTERRUPTED
    bar.close()
    blobs, _, state = left()
    print(f"volume {volume.path}: {state}" + (f", {blobs} blobs left" if blobs else ""))
    return exit_codes.OK if state == "drained" else exit_codes.UNAVAILABLE  # the volume failed on the way


def _rebuild_line(r: storage_pb2.VolumeRebuild) -> str:
    eta = f", about {r.eta_seconds:.0f}s to go" if r.eta_seconds > 0 else ""
    return (f"{r.state}, {r.blobs_done} of {r.blobs_total} blobs ({human_bytes(r.bytes_done)}, "
            f"{human_bytes(int(r.bytes_per_second))}/s{eta})" + (f", {r.blobs_failed} failed" if r.blobs_failed else "")
            + (f"; last error: {r.last_error}" if r.last_error and r.state != "done" else ""))


def run_rebuild(args: argparse.Namespace, client: PacsvaultClient) -> int:
    started = client.rebuild_volume(args.volume)
    print(f"volume {started.path}: rebuilding {started.blobs_total} blobs from the peer")
    if not should_wait(args):
        print("follow it with `pacsvault tiers` (the volume reads `drained` when done)")
        return exit_codes.OK

    def now() -> storage_pb2.VolumeRebuild:
        found = [r for r in client.list_volumes().rebuilds if r.volume_id == started.volume_id]
        return found[0] if found else started

    def left() -> tuple[int, bool, str]:
        r = now()
        eta = f"ETA {r.eta_seconds:.0f}s" if r.eta_seconds > 0 else r.state
        return max(0, r.blobs_total - r.blobs_done - r.blobs_failed), r.state != "running", eta

    bar = progress_bar(started.blobs_total, "blob", desc="rebuild")
    try:
        follow(bar, left)
    except KeyboardInterrupt:
        bar.close()
        print("stopped following; the rebuild goes on (`pacsvault tiers` shows it)", file=sys.stderr)
        return exit_codes.INTERRUPTED
    bar.close()
    final = now()
    print(f"volume {final.path}: {_rebuild_line(final)}")
    return exit_codes.OK if final.state == "done" else exit_codes.DATA_LOSS
