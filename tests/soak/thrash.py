"""make soak: a bounded thrash soak of a real appliance pair (issue 15, item 6).

    .venv/bin/python -m tests.soak.thrash [--minutes 10] [--dir DIR] [--seed N]

A model-based client stores, reads and deletes while chaos loops through
kill -9 of the primary, bit-flips of its blobs, its hot volume filled to
the brim, and peer outages. Every read is checked against the model: an
acknowledged instance must come back byte for byte (or the daemon be
briefly away); a deleted one must be gone. At the end, with everything
back, a full scrub pass, then `check --repair` (the soak sets the orphan
grace to 0: nothing is in flight any more, and what kill -9 cut short
between a blob's write and its commit is what it removes) and `check`,
which must be clean. Exit 0 only when every read matched and check is clean.

Not part of `make test`: it runs for minutes. Mounts a tmpfs for the hot
tier (root, as CI); without root the full-volume chaos is left out, said.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pacsvault.client import PacsvaultClient
from pacsvault.client import corpus as corpus_module
from pacsvault.daemon.replication import certs
from tests.conftest import Daemon, run_cli
from tests.integration.test_replication_pair import config_for
from tests.integrity.damage import bit_flip

TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"}


@dataclass
class Model:
    """What the appliance must hold: acknowledged instances, and what may or may not be there."""

    stored: dict[str, bytes] = field(default_factory=dict)  # sop -> bytes, acknowledged
    study_of: dict[str, str] = field(default_factory=dict)  # sop -> study
    deleted: set[str] = field(default_factory=set)  # sops whose delete was acknowledged
    unsure: dict[str, bytes] = field(default_factory=dict)  # sent, answer lost: there or not
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=lambda: {"stores": 0, "reads": 0, "deletes": 0, "transient": 0})
    failures: list[str] = field(default_factory=list)
    transients: dict[str, int] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="pacsvault-soak-"))
    rng = random.Random(args.seed)
    # About 360 instances a minute of chaos, stored at an even pace, so stores go on to the end.
    corpus = corpus_module.generate(root / "corpus", patients=max(15, int(15 * args.minutes)), studies_per_patient=3,
                                    series_per_study=2, instances_per_series=4, seed=args.seed)
    store_gap = args.minutes * 60 * 0.9 / (len(corpus) / 2)
    hot = _hot_volume(root)
    a, b = _pair(root, hot)
    model, stop = Model(), threading.Event()
    try:
        a.start(60)
        clients = [threading.Thread(target=_client, args=(a, part, model, stop, random.Random(rng.random()),
                                                          args.max_ops, store_gap))
                   for part in _by_study(corpus, 2)]
        for thread in clients:
            thread.start()
        try:
            chaos = _chaos(a, b, hot, model, rng, stop, deadline=time.monotonic() + args.minutes * 60)
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=120)
        return _finish(a, b, hot, model, chaos)
    finally:
        for daemon in (a, b):
            if daemon.alive:
                daemon.stop(signal.SIGKILL)
        if hot is not None:
            subprocess.run(["umount", "-l", str(hot)], check=False, capture_output=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the chaos runs (default 10)")
    parser.add_argument("--dir", help="where the pair lives (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--max-ops", type=int, default=50000, help="operations per client at most (default 50000)")
    return parser.parse_args(argv)


def _hot_volume(root: Path) -> Path | None:
    point = root / "hot"
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(point)], capture_output=True)
    if done.returncode != 0:
        print("soak: cannot mount a tmpfs (not root?): the full-volume chaos is left out", file=sys.stderr)
        return None
    return point


def _pair(root: Path, hot: Path | None) -> tuple[Daemon, Daemon]:
    cert_dir = root / "certs"
    certs.write_set(cert_dir, {"site-a": ["127.0.0.1"], "site-b": ["127.0.0.1"]})
    ports = {"site-a": _fixed_port(), "site-b": _fixed_port()}
    tiers = "" if hot is None else (
        f'[[tiers]]\nname = "hot"\nvolumes = ["{hot}"]\nreserve_bytes = 0\n'
        '[[tiers]]\nname = "capacity"\nvolumes = ["tiers/capacity"]\nreserve_bytes = 0\n')
    extra = ("[retention]\nsoft_delete_days = 0.0005\npurge_interval_s = 5.0\n[integrity]\norphan_grace_s = 0\n"
             "[tiering]\nmover_interval_s = 2.0\n")
    daemons = {}
    for name, peer in (("site-b", "site-a"), ("site-a", "site-b")):
        config = config_for(name, peer, cert_dir, ports[name], ports[peer], root / f"{name}.toml")
        config.write_text(config.read_text() + extra + (tiers if name == "site-a" else ""))
        # A fixed API port: the clients keep talking to the same address across kill -9 and restarts.
        daemons[name] = Daemon(root / name, config, extra=["--listen", f"127.0.0.1:{_fixed_port()}"])
    daemons["site-b"].start(60)
    return daemons["site-a"], daemons["site-b"]


def _fixed_port() -> int:
    """A free port below the kernel's ephemeral range, so no port-0 listener (a metrics port, another
    daemon) takes it while the appliance is down between a kill -9 and its restart."""
    import socket

    while True:
        port = random.randint(20000, 29999)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


# -- the model-based client ---------------------------------------------------------------


def _by_study(items: list, parts: int) -> list[list]:  # type: ignore[type-arg]
    """Each client owns whole studies: it alone stores, reads and deletes them, one call at a time,
    so no other client's delete can race its read or an in-flight store of the same study."""
    studies = sorted({item.study_instance_uid for item in items})
    owner = {study: i % parts for i, study in enumerate(studies)}
    return [[item for item in items if owner[item.study_instance_uid] == i] for i in range(parts)]


def _client(a: Daemon, items: list, model: Model, stop: threading.Event, rng: random.Random,  # type: ignore[type-arg]
            max_ops: int, store_gap: float) -> None:
    pending = list(items)
    rng.shuffle(pending)
    mine = {item.study_instance_uid for item in items}
    next_store = 0.0
    with PacsvaultClient(a.target, timeout=10, retry=None) as client:
        for _ in range(max_ops):
            if stop.is_set():
                break
            roll = rng.random()
            try:
                if roll < 0.5 and pending and time.monotonic() >= next_store:
                    next_store = time.monotonic() + store_gap
                    _store(client, pending.pop(), model)
                elif roll < 0.995:
                    _read(client, model, rng, mine)
                else:
                    _delete(client, model, rng, mine)
            except Exception as exc:  # noqa: BLE001 - a client error is the soak's finding, not its crash
                code = getattr(exc, "code", lambda: None)()
                if code is not None and code.name in TRANSIENT:
                    with model.lock:
                        model.counts["transient"] += 1
                        key = f"{code.name}"
                        model.transients[key] = model.transients.get(key, 0) + 1
                    time.sleep(0.5)
                else:
                    with model.lock:
                        model.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)


def _store(client: PacsvaultClient, item, model: Model) -> None:  # type: ignore[no-untyped-def]
    data = item.path.read_bytes()
    result = client.store(data)
    with model.lock:
        model.counts["stores"] += 1
        if result.ok:
            model.stored[item.sop_instance_uid] = data
            model.study_of[item.sop_instance_uid] = item.study_instance_uid
            model.unsure.pop(item.sop_instance_uid, None)
        elif result.code in TRANSIENT:
            model.unsure[item.sop_instance_uid] = data
            model.study_of[item.sop_instance_uid] = item.study_instance_uid
            model.counts["transient"] += 1
            model.transients[result.code] = model.transients.get(result.code, 0) + 1
        else:
            model.failures.append(f"store of {item.sop_instance_uid} refused: {result.code}: {result.message}")


def _read(client: PacsvaultClient, model: Model, rng: random.Random, mine: set[str]) -> None:
    with model.lock:
        pool = [s for s in list(model.stored) + list(model.deleted) if model.study_of[s] in mine]
        if not pool:
            return
        sop = rng.choice(pool)
        expected = model.stored.get(sop)
    try:
        got = client.get_instance(sop)
    except Exception as exc:  # noqa: BLE001 - judged against the model right here
        code = getattr(exc, "code", lambda: None)()
        if code is not None and code.name == "NOT_FOUND" and expected is None:
            return  # deleted, and gone: right
        raise
    with model.lock:
        model.counts["reads"] += 1
        if expected is None and sop in model.deleted:
            model.failures.append(f"read of deleted {sop} returned data")
        elif got != expected:
            model.failures.append(f"read of {sop} returned other bytes")


def _delete(client: PacsvaultClient, model: Model, rng: random.Random, mine: set[str]) -> None:
    with model.lock:
        studies = sorted({model.study_of[s] for s in model.stored} & mine)
        if len(studies) < 5:
            return
        study = rng.choice(studies)
        members = [s for s, st in model.study_of.items() if st == study and s in model.stored]
        unsure = [s for s, st in model.study_of.items() if st == study and s in model.unsure]
    try:
        client.delete_study(study, "soak")
    except Exception:
        with model.lock:  # the answer was lost, not necessarily the delete: the model forgets the study
            for sop in members + unsure:
                model.stored.pop(sop, None)
                model.unsure.pop(sop, None)
        raise
    with model.lock:
        model.counts["deletes"] += 1
        for sop in members:
            model.stored.pop(sop, None)
            model.deleted.add(sop)
        for sop in unsure:
            # Its store's answer was lost: the daemon may still have been committing it when the
            # delete ran, so whether it is there now is not known. The model forgets it.
            model.unsure.pop(sop, None)


# -- chaos ---------------------------------------------------------------------------------


def _chaos(a: Daemon, b: Daemon, hot: Path | None, model: Model, rng: random.Random, stop: threading.Event,
           deadline: float) -> dict[str, int]:
    done = {"kill -9": 0, "bit-flip": 0, "bit-flip skipped": 0, "full volume": 0, "peer outage": 0}
    kinds = ["kill -9", "bit-flip", "peer outage"] + (["full volume"] if hot is not None else [])
    actions: list[str] = []
    while time.monotonic() < deadline and not model.failures:
        time.sleep(rng.uniform(3, 8))
        if not actions:  # every kind once per round, in a new order each round
            actions = rng.sample(kinds, len(kinds))
        action = actions.pop()
        done[action] += 1
        print(f"soak: {time.strftime('%H:%M:%S')} {action} ({model.counts}, transient {model.transients})", flush=True)
        if action == "kill -9":
            _stop(a, signal.SIGKILL, model)
            time.sleep(rng.uniform(0.5, 2))
            a.start(120)
        elif action == "bit-flip" and not _flip_a_replicated_blob(a, rng):
            done["bit-flip"] -= 1
            done["bit-flip skipped"] += 1
        elif action == "full volume":
            ballast = hot / "ballast"  # type: ignore[operator]
            free = shutil.disk_usage(hot).free  # type: ignore[arg-type]
            subprocess.run(["fallocate", "-l", str(max(0, free - 4096)), str(ballast)], check=False)
            time.sleep(rng.uniform(3, 8))
            ballast.unlink(missing_ok=True)
        else:
            _stop(b, signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM, model)
            time.sleep(rng.uniform(5, 15))
            b.start(120)
    return done


def _stop(daemon: Daemon, sig: int, model: Model) -> None:
    """Stops the supervisor and waits for its serving and back-office processes to be gone too
    (PR_SET_PDEATHSIG kills them, a moment later): until then they hold the API port."""
    assert daemon.proc is not None
    children = psutil.Process(daemon.proc.pid).children(recursive=True)
    daemon.stop(sig)
    _, alive = psutil.wait_procs(children, timeout=30)
    if alive:
        with model.lock:
            model.failures.append(f"{len(alive)} processes outlived their supervisor by 30 s after signal {sig}")
        for proc in alive:
            proc.kill()


def _flip_a_replicated_blob(a: Daemon, rng: random.Random) -> bool:
    """Rot only what the peer holds a copy of (nothing pending): then every read must still be right.
    False when nothing was flipped (changes pending for the peer, or the blob went meanwhile)."""
    status = run_cli(a.target, "replication", "status", "--json")
    if status.returncode not in (0, 1) or json.loads(status.stdout)["pending_entries"]:
        return False
    blobs = [p for p in a.data_dir.glob("tiers/*/blobs/**/*") if p.is_file()]
    blobs += [p for p in (a.data_dir.parent / "hot").glob("blobs/**/*") if p.is_file()]
    if not blobs:
        return False
    try:
        bit_flip(rng.choice(blobs))
    except OSError:
        return False  # moved or deleted meanwhile
    return True


# -- the end ---------------------------------------------------------------------------------


def _finish(a: Daemon, b: Daemon, hot: Path | None, model: Model, chaos: dict[str, int]) -> int:
    if hot is not None:
        (hot / "ballast").unlink(missing_ok=True)
    for daemon in (a, b):
        if not daemon.alive:
            daemon.start(120)
    _wait(lambda: json.loads(run_cli(a.target, "replication", "status", "--json").stdout)["pending_entries"] == 0)
    _read_everything(a, model)
    scrub = _full_scrub(a)
    repaired = run_cli(a.target, "check", "--repair", "--json")
    check = run_cli(a.target, "check")
    print(f"soak: chaos {chaos}; client {model.counts} (transient: {model.transients}); {len(model.stored)} instances held, "
          f"{len(model.deleted)} deleted")
    print(f"soak: scrub (all passes) found {scrub['found']}, repaired {scrub['repaired']}, unrepairable "
          f"{scrub['unrepairable']} (a rotten blob read first is repaired by the read); check --repair: {repaired.stderr.strip() or repaired.stdout.strip()[-200:]}")
    print(f"soak: check: {check.stderr.strip()} (exit {check.returncode})")
    for failure in model.failures[:20]:
        print(f"soak: FAILED: {failure}")
    ok = not model.failures and check.returncode == 0 and scrub["unrepairable"] == 0
    print("soak: PASSED" if ok else "soak: FAILED")
    return 0 if ok else 1


def _read_everything(a: Daemon, model: Model) -> None:
    with PacsvaultClient(a.target, timeout=60) as client:
        for sop, data in model.stored.items():
            try:
                if client.get_instance(sop) != data:
                    model.failures.append(f"final read of {sop}: other bytes")
            except Exception as exc:  # noqa: BLE001 - judged right here
                model.failures.append(f"final read of {sop}: {exc}")
        for sop in model.deleted:
            try:
                client.get_instance(sop)
                model.failures.append(f"final read of deleted {sop} returned data")
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "code", lambda: None)().name != "NOT_FOUND":
                    model.failures.append(f"final read of deleted {sop}: {exc}")


def _full_scrub(a: Daemon) -> dict:
    before = json.loads(run_cli(a.target, "scrub", "status", "--json").stdout)["passes_completed"]
    run_cli(a.target, "scrub", "start")
    status: dict = {}
    def done() -> bool:
        nonlocal status
        status = json.loads(run_cli(a.target, "scrub", "status", "--json").stdout)
        return status["passes_completed"] > before
    _wait(done, timeout=600)
    return status


def _wait(condition, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the pair did not settle")
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
