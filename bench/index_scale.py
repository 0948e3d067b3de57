#!/usr/bin/env python
"""Index scale: find latency and ingest rate as the index grows to 10k, 100k and 1M instances.

    .venv/bin/python bench/index_scale.py [--quick] [--scales 10000,100000,1000000] [--encryption on|off]
                                          [--json-out FILE]

Bulk path (says which, as the issue asks): the index is filled by opening the
daemon's own parts on the data dir (pacsvault.daemon.processes.in_process, the
same IndexEnvironment and Catalog pacsvaultd opens) and running
Catalog._add -- the exact function Catalog.add_instance runs for every real
store -- on synthetic ParsedInstance records, a few thousand per LMDB write
transaction through IndexEnvironment.write (one durable commit per batch
instead of one per group of concurrent stores). Every synthetic instance has
its own blob record (distinct digest, 4 KiB), pointing at the hot volume, but
no blob file is written: only the index is under test, and nothing reads
those blobs. The shape is the corpus's: 2 studies x 4 series x 5 instances
per patient, with names, dates, accession numbers and modalities, so every
secondary index (by name, date, accession, modality) grows as in real use.

At each scale, with nothing else changed: pacsvaultd is started on the data
dir (start-up time reported), then
  - find: ListPatientStudies by PatientID and Find by StudyInstanceUID, p50/p99,
    for patients spread over the whole index, answers checked;
  - ingest: a real corpus slice (same sources and sizes at every scale, new
    identities) stored through gRPC with --parallel clients, inst/s, reported
    against the rate at the first scale (target >= 0.90 at 1M).
  - the same finds again on a daemon restarted with the audit trail off
    ([audit] enabled = false): the index and gRPC alone, so a change in the
    audit path (two durable trail appends per read) is not read as index growth.
The fills are incremental (10k, then +90k, then +900k) in one data dir.

Encryption at rest is on, as by default ([encryption] enabled = true; the
keyring is made beside the data dir), unless --encryption off: the fill, the
in-process finds and every daemon use the same setting. Right after each
fill, in the fill's own parts, find by PatientID runs in-process on its
IndexEnvironment (query.find, STUDIES answers checked): the index alone, no
gRPC, no audit, with its PHI sealed or not as the report says ("index
sealed"), so the cost of the tags and of opening sealed records is seen
directly.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import blake3

import corpus_cache
import measure
from corpus_cache import INSTANCES, SERIES, STUDIES
from daemon_proc import running_daemon
from ingest_retrieve import log
from pacsvault.client import PacsvaultClient
from pacsvault.daemon import config as config_module
from pacsvault.daemon.dicom.parse import ParsedInstance
from pacsvault.daemon.digest import Digest, DigestFunction
from pacsvault.daemon.index import query
from pacsvault.daemon.index.catalog import NewBlob
from pacsvault.daemon.processes.in_process import InProcess
from report import Figure, machine_info, render_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
PER_PATIENT = STUDIES * SERIES * INSTANCES
BATCH = 4000  # instances per LMDB write transaction during the fill
SYNTHETIC_BLOB_BYTES = 4096
MODALITIES = ("CT", "MR", "CT", "MR", "US", "CR", "DX", "NM")
NAMES = ("Doe^Jane", "Smith^John", "Müller^Jürgen", "Dupont^Hélène", "García^José", "Nguyen^Van")
FIND_TARGET_MS = 2.0


def synthetic_patient(p: int) -> list[ParsedInstance]:
    pid = f"IX-{p:07d}"
    out = []
    for s in range(STUDIES):
        study = f"2.25.1{p:09d}{s:02d}"
        date = f"20{10 + p % 15:02d}{1 + p % 12:02d}{1 + p % 28:02d}"
        for se in range(SERIES):
            series = f"{study}.{se + 1}"
            modality = MODALITIES[(p + s + se) % len(MODALITIES)]
            for i in range(INSTANCES):
                out.append(ParsedInstance(
                    sop_instance_uid=f"{series}.{i + 1}", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    series_instance_uid=series, study_instance_uid=study,
                    transfer_syntax_uid="1.2.840.10008.1.2.1", patient_id=pid, issuer_of_patient_id="",
                    patient_name=NAMES[p % len(NAMES)] + f"{p}", patient_birth_date="19700101",
                    patient_sex="FM"[p % 2], study_date=date, study_time="120000",
                    accession_number=f"IXA{p:07d}{s}", study_description="synthetic", study_id=str(s + 1),
                    referring_physician_name="", modality=modality, series_number=str(se + 1),
                    series_description="", instance_number=str(i + 1), number_of_frames=1,
                ))
    return out


def fill(data_dir: Path, config_file: Path, first_patient: int, patients: int, seed_file: bytes,
         index_samples: int, seed: int) -> tuple[float, dict]:
    """Adds ``patients`` synthetic patients to the index in data_dir; returns wall seconds and
    the in-process find figures measured on the filled index."""
    config = config_module.load(config_file).with_overrides(data_dir=str(data_dir))
    archive = InProcess(config, data_dir.parent / "fill-run")
    try:
        # One real store, so the synthetic blob records point at a real volume the
        # daemon knows (duplicate on later fills: nothing changes).
        archive.store(seed_file)
        seed_sop = _sop_of(seed_file)
        location = archive.catalog.instance(seed_sop)[1].location
        catalog, now = archive.catalog, time.time()
        started = time.perf_counter()
        pending: list[tuple[ParsedInstance, NewBlob]] = []
        for p in range(first_patient, first_patient + patients):
            for parsed in synthetic_patient(p):
                digest = Digest(DigestFunction.BLAKE3, blake3.blake3(parsed.sop_instance_uid.encode()).digest(),
                                SYNTHETIC_BLOB_BYTES)
                pending.append((parsed, NewBlob(digest, location, SYNTHETIC_BLOB_BYTES)))
            if len(pending) >= BATCH:
                _write(archive, catalog, pending, now)
                pending = []
        if pending:
            _write(archive, catalog, pending, now)
        wall = time.perf_counter() - started
        return wall, measure_index(archive, first_patient + patients, index_samples, seed)
    finally:
        archive.close()


def measure_index(archive: InProcess, patients: int, samples: int, seed: int) -> dict:
    """Find by PatientID in-process on the filled IndexEnvironment: the index alone."""
    rng = random.Random(seed)
    pids = [f"IX-{rng.randrange(patients):07d}" for _ in range(samples)]

    def by_patient(pid: object) -> None:
        matches, _ = query.find(archive.index, query.Query(query.Level.STUDY, patient_id=str(pid)), 100, "")
        if len(matches) != STUDIES or any(m.patient.patient_id != pid for m in matches):
            raise SystemExit(f"in-process find of {pid}: {len(matches)} studies, expected {STUDIES}")

    return {"index_sealed": archive.index.sealer.enabled,
            "find_patient_studies": measure.summary_ms(measure.timed_calls(by_patient, pids))}


def _write(archive: InProcess, catalog, batch: list, now: float) -> None:
    # Catalog._add is what Catalog.add_instance runs inside the writer's transaction.
    outcomes = archive.index.write(lambda txn: [catalog._add(txn, p, b, now) for p, b in batch])
    if any(o.value != "stored" for o in outcomes):
        raise SystemExit("bulk fill: an instance was not stored (duplicate synthetic UID?)")


def _sop_of(data: bytes) -> str:
    from pacsvault.daemon.dicom.parse import parse

    return parse(data).sop_instance_uid


def measure_scale(work: Path, scale: int, patients: int, slice_datas: list[bytes], params, raw: dict,
                  in_process: dict) -> list[str]:
    entry: dict = {"indexed_instances": scale, "in_process": in_process}
    os.sync()  # the fill's writeback is not charged to the measurement
    time.sleep(1.0)
    started = time.perf_counter()
    with running_daemon(work, params.config_file) as daemon, PacsvaultClient(daemon.target) as client:
        entry["daemon_start_s"] = time.perf_counter() - started
        entry["index_stats"] = _stats(client)
        rng = random.Random(params.seed + scale)
        pids = [f"IX-{rng.randrange(patients):07d}" for _ in range(params.samples)]
        study_uids = [f"2.25.1{rng.randrange(patients):09d}{rng.randrange(STUDIES):02d}" for _ in range(params.samples)]
        by_patient = measure.timed_calls(measure.find_by_patient(client), pids)
        by_study = measure.timed_calls(measure.find_by_study(client), study_uids)
        floor = measure.timed_calls(lambda _: client.serving_status(), range(params.samples))
        problems = [pid for pid in set(pids) if len(list(client.patient_studies(pid))) != STUDIES]
        problems += [u for u in set(study_uids) if
                     [m.study.study_instance_uid for m in client.find("study", study_instance_uid=u)] != [u]]
        run = measure.ingest(client, slice_datas, params.parallel)
        if run.failures:
            problems += run.failures[:10]
        entry["find_patient_studies"] = measure.summary_ms(by_patient)
        entry["find_study_uid"] = measure.summary_ms(by_study)
        entry["rpc_floor_health_check"] = measure.summary_ms(floor)
        entry["ingest"] = {"n": len(slice_datas), "wall_s": run.wall_s, "inst_s": len(slice_datas) / run.wall_s,
                           "latency": measure.summary_ms(run.latencies_s)}
    if params.audit_off_find:
        # The same finds with the audit trail off: what the index and gRPC cost alone,
        # so a change in the audit path is not mistaken for index growth.
        config = work / "audit-off.toml"
        config.write_text(params.config_file.read_text() + "[audit]\nenabled = false\n")
        with running_daemon(work, config) as daemon, PacsvaultClient(daemon.target) as client:
            entry["audit_off"] = {
                "find_patient_studies": measure.summary_ms(measure.timed_calls(measure.find_by_patient(client), pids)),
                "find_study_uid": measure.summary_ms(measure.timed_calls(measure.find_by_study(client), study_uids)),
            }
    entry["problems"] = problems
    raw.setdefault("scales", []).append(entry)
    return problems


def _stats(client: PacsvaultClient) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(client.health().index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scales 2,000 and 10,000, small ingest slice")
    parser.add_argument("--scales", help="comma-separated instance counts (default 10000,100000,1000000)")
    parser.add_argument("--ingest", type=int, help="instances stored at each scale (default 600, quick 120)")
    parser.add_argument("--samples", type=int, help="find queries of each kind (default 300, quick 100)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--encryption", choices=("on", "off"), default="on",
                        help="encryption at rest for the fill and every daemon (default on, as shipped)")
    parser.add_argument("--no-audit-off-find", dest="audit_off_find", action="store_false",
                        help="skip the second find measurement with the audit trail disabled")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true")
    params = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    scales = [int(s) for s in (params.scales or ("2000,10000" if params.quick else "10000,100000,1000000")).split(",")]
    params.samples = params.samples or (100 if params.quick else 300)
    ingest_n = params.ingest or (120 if params.quick else 600)
    default_name = "index_scale_quick.json" if params.quick else "index_scale.json"
    json_out = params.json_out or BENCH_DIR / "results" / default_name

    # One corpus slice per scale: same seed (same sources, same sizes), new identities.
    slices = []
    for k in range(len(scales)):
        items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(ingest_n, params.seed, prefix=f"SC{k}"))
        slices.append([Path(i.path).read_bytes() for i in items])
    seed_items, _ = corpus_cache.load_or_generate(corpus_cache.shape_for(1, params.seed, prefix="SEED"))
    seed_file = Path(seed_items[0].path).read_bytes()

    work = Path(tempfile.mkdtemp(prefix="pacsvault-index-scale-", dir=params.work_dir))
    data_dir = work / "daemon-data"
    params.config_file = work / "encryption.toml"
    # The production guard wants encryption or audit off acknowledged (the audit-off run appends [audit]).
    params.config_file.write_text(f"[encryption]\nenabled = {'true' if params.encryption == 'on' else 'false'}\n"
                                  "[security]\ninsecure_no_encryption = true\ninsecure_no_audit = true\n")
    raw: dict = {"fill_path": "InProcess(config) + Catalog._add on synthetic ParsedInstance, "
                 f"{BATCH} per IndexEnvironment.write transaction; no blob files",
                 "fills": []}
    problems: list[str] = []
    patients = 0
    indexed_extra = 1  # the seed instance
    try:
        for k, scale in enumerate(scales):
            target_patients = max(0, (scale - indexed_extra) // PER_PATIENT)
            add = target_patients - patients
            log(f"fill: +{add * PER_PATIENT:,} synthetic instances -> {scale:,}")
            wall, in_process = fill(data_dir, params.config_file, patients, add, seed_file, params.samples,
                                    params.seed + scale)
            raw["fills"].append({"added": add * PER_PATIENT, "wall_s": wall,
                                 "inst_s": add * PER_PATIENT / wall if wall else None})
            patients = target_patients
            indexed = patients * PER_PATIENT + indexed_extra
            log(f"measure at {indexed:,} indexed instances")
            found = measure_scale(work, indexed, patients, slices[k], params, raw, in_process)
            problems += [f"scale {scale}: {p}" for p in found]
            indexed_extra += len(slices[k])
        raw["index_bytes"] = sum(p.stat().st_size for p in (data_dir / "index").rglob("*") if p.is_file())
        machine = machine_info(work)
    finally:
        if not params.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures = build_figures(raw)
    print(render_table(figures))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    write_json(json_out, {"params": {**vars(params), "json_out": str(json_out), "work_dir": params.work_dir,
                                     "config_file": str(params.config_file)},
                          "machine": machine, "raw": raw, "problems": problems}, figures)
    log(f"wrote {json_out}")
    return 1 if problems else 0


def build_figures(raw: dict) -> list[Figure]:
    figures: list[Figure] = []
    base = raw["scales"][0]
    for fill_run in raw["fills"]:
        if fill_run["added"]:
            figures.append(Figure("fill", f"bulk fill +{fill_run['added']:,}", fill_run["inst_s"], "inst/s",
                                  note=f"{fill_run['wall_s']:.0f} s, Catalog._add, no blob files"))
    for s in raw["scales"]:
        label = f"{s['indexed_instances']:,} indexed"
        section = f"at {label}"
        fp, fs, fl = s["find_patient_studies"], s["find_study_uid"], s["rpc_floor_health_check"]
        inner = s["in_process"]
        sealed = "index sealed" if inner["index_sealed"] else "index NOT sealed"
        figures += [
            Figure(section, "in-process find by PatientID p50 (index alone)", inner["find_patient_studies"]["p50_ms"],
                   "ms", higher_is_better=False, note=f"query.find on the fill's index; {sealed}"),
            Figure(section, "in-process find by PatientID p99 (index alone)", inner["find_patient_studies"]["p99_ms"],
                   "ms", FIND_TARGET_MS, higher_is_better=False, note=f"baseline: the {FIND_TARGET_MS:g} ms target"),
            Figure(section, "pacsvaultd start to SERVING", s["daemon_start_s"], "s"),
            Figure(section, "ListPatientStudies by PatientID p50", fp["p50_ms"], "ms", fl["p50_ms"],
                   higher_is_better=False, note="baseline: health-check RPC"),
            Figure(section, "ListPatientStudies by PatientID p99", fp["p99_ms"], "ms", FIND_TARGET_MS,
                   higher_is_better=False, note=f"baseline: the {FIND_TARGET_MS:g} ms target (>= 1 met)"),
            Figure(section, "Find by StudyInstanceUID p50", fs["p50_ms"], "ms", fl["p50_ms"],
                   higher_is_better=False, note="baseline: health-check RPC"),
            Figure(section, "Find by StudyInstanceUID p99", fs["p99_ms"], "ms", FIND_TARGET_MS,
                   higher_is_better=False, note=f"baseline: the {FIND_TARGET_MS:g} ms target"),
            *([Figure(section, f"  same, audit trail off: {name} {q}", s["audit_off"][key][f"{q}_ms"], "ms",
                      FIND_TARGET_MS if q == "p99" else None, higher_is_better=False,
                      note="index + gRPC alone" if q == "p50" else f"baseline: the {FIND_TARGET_MS:g} ms target")
               for key, name in (("find_patient_studies", "by PatientID"), ("find_study_uid", "by StudyUID"))
               for q in ("p50", "p99")] if "audit_off" in s else []),
            Figure(section, f"ingest {s['ingest']['n']} real instances", s["ingest"]["inst_s"], "inst/s",
                   base["ingest"]["inst_s"], note=f"baseline: at {base['indexed_instances']:,}; target >= 0.90"),
            Figure(section, "store latency under load p99", s["ingest"]["latency"]["p99_ms"], "ms"),
        ]
    if "index_bytes" in raw:
        figures.append(Figure("index", "LMDB index size at the end", raw["index_bytes"] / 1e6, "MB"))
    return figures


if __name__ == "__main__":
    sys.exit(main())
