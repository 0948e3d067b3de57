#!/usr/bin/env python
"""pacsvault's DICOMweb door beside Orthanc's, same corpus, same queries, same run.

    .venv/bin/python bench/dicomweb.py [--quick] [--instances N] [--samples N] [--json-out FILE]

Loads the corpus into pacsvaultd (over gRPC) and into Orthanc from the
Debian package (POST /instances, our own process on loopback: orthanc_peer.py),
with Orthanc's DICOMweb plugin (Debian's orthanc-dicomweb, installed if
missing; without it only /tools/find is compared, as the issue allows).
Then, one request at a time over a keep-alive connection, on the same
seeded samples: QIDO-RS study search by PatientID and by StudyInstanceUID
(pacsvault /dicom-web/studies against the plugin's /dicom-web/studies and
against /tools/find), and one instance by WADO-RS (pacsvault's
/dicom-web/studies/../instances/{uid} against Orthanc's /instances/{id}/file,
and the plugin's WADO-RS). Every answer is checked untimed: the studies the
corpus holds, the bytes that were stored. Targets (issue 17): QIDO-RS study
search p99 <= Orthanc's; WADO-RS instance p50 <= Orthanc's /instances/{id}/file.
Exit 1 only on wrong answers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

import measure
import orthanc_phases
import orthanc_peer
from corpus_cache import STUDIES, Item
from daemon_proc import running_daemon
from ingest_retrieve import Params, log, prepare_corpus
from pacsvault.client import PacsvaultClient
from report import Comparison, machine_info, render_comparison, write_json

BENCH_DIR = Path(__file__).resolve().parent
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PLUGIN_PACKAGE = "orthanc-dicomweb"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def parse_args(argv: list[str] | None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 instances, 100 samples (about a minute)")
    parser.add_argument("--instances", type=int, help="corpus size (default 2000)")
    parser.add_argument("--samples", type=int, help="queries and retrieves each (default 300, quick 100)")
    parser.add_argument("--parallel", type=int, default=8, help="concurrent stores while loading (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", help="where both systems write (default: system temp dir)")
    parser.add_argument("--json-out", type=Path, help="default bench/results/dicomweb[_quick].json")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    a = parser.parse_args(argv)
    samples = a.samples or (100 if a.quick else 300)
    return Params(instances=a.instances or (200 if a.quick else 2000), parallel=a.parallel,
                  retrieve_samples=samples, find_queries=samples, studies=0, seed=a.seed, quick=a.quick,
                  work_dir=a.work_dir, json_out=a.json_out or BENCH_DIR / "results" / (
                      "dicomweb_quick.json" if a.quick else "dicomweb.json"), keep=a.keep)


def ensure_plugin() -> tuple[bool, list[str]]:
    """Debian's orthanc-dicomweb, installed if missing (root); False when it cannot be had."""
    if PLUGIN.exists():
        return True, []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    done = subprocess.run([*prefix, "apt-get", "install", "-y", "--no-install-recommends", PLUGIN_PACKAGE],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode == 0 and PLUGIN.exists():
        return True, [f"installed {PLUGIN_PACKAGE} from the Debian archive"]
    return False, [f"{PLUGIN_PACKAGE} could not be installed ({done.stderr.strip()[-200:]}): "
                   "compared against /tools/find only"]


def queries(items: list[Item], params: Params) -> tuple[list[str], list[str], list[Item]]:
    rng = random.Random(params.seed)
    patients = rng.choices(sorted({i.patient_id for i in items}), k=params.find_queries)
    studies = rng.choices(sorted({i.study_uid for i in items}), k=params.find_queries)
    return patients, studies, measure.sample(items, params.retrieve_samples, params.seed)


def qido_phase(pool: orthanc_peer.HttpPool, prefix: str, items: list[Item], params: Params, raw: dict,
               problems: list[str], who: str) -> None:
    """GET {prefix}/studies?PatientID= and ?StudyInstanceUID=, one at a time; answers checked untimed."""
    patients, studies, _ = queries(items, params)

    def search(key: str):  # type: ignore[no-untyped-def]
        def call(value: object) -> list[str]:
            status, body = pool.request("GET", f"{prefix}/studies?{key}={quote(str(value))}",
                                        accept="application/dicom+json")
            if status != 200:
                raise RuntimeError(f"{who} QIDO {key}={value}: HTTP {status} {body[:200]!r}")
            return sorted(r["0020000D"]["Value"][0] for r in json.loads(body))
        return call

    by_patient, by_study = search("PatientID"), search("StudyInstanceUID")
    raw["qido_patient"] = measure.summary_ms(measure.timed_calls(by_patient, patients))
    raw["qido_study"] = measure.summary_ms(measure.timed_calls(by_study, studies))
    expected: dict[str, set[str]] = {}
    for item in items:
        expected.setdefault(item.patient_id, set()).add(item.study_uid)
    for patient in sorted(set(patients)):
        if set(by_patient(patient)) != expected[patient] or len(expected[patient]) != STUDIES:
            problems.append(f"{who} QIDO PatientID={patient}: wrong studies")
    for study in sorted(set(studies)):
        if by_study(study) != [study]:
            problems.append(f"{who} QIDO StudyInstanceUID={study}: wrong answer")


def wado_phase(pool: orthanc_peer.HttpPool, prefix: str, items: list[Item], datas: dict[str, bytes],
               params: Params, raw: dict, problems: list[str], who: str) -> None:
    _, _, chosen = queries(items, params)

    def get(item: object) -> bytes:
        assert isinstance(item, Item)
        status, body = pool.request("GET", f"{prefix}/studies/{item.study_uid}/series/{item.series_uid}"
                                           f"/instances/{item.sop_uid}", accept=WADO_ACCEPT)
        if status != 200:
            raise RuntimeError(f"{who} WADO-RS {item.sop_uid}: HTTP {status} {body[:200]!r}")
        return body

    raw["wado_instance"] = measure.summary_ms(measure.timed_calls(get, chosen))
    for item in chosen:
        if datas[item.sop_uid] not in get(item):  # the one part's body is the stored file, byte for byte
            problems.append(f"{who} WADO-RS {item.sop_uid}: the stored bytes are not in the answer")


def run(params: Params, items: list[Item], datas: dict[str, bytes], work: Path, version: str,
        plugin: bool) -> tuple[dict, dict, list[str], dict]:
    pv: dict = {}
    orth: dict = {}
    problems: list[str] = []
    ordered = [datas[i.sop_uid] for i in items]
    with running_daemon(work / "pacsvault") as daemon, PacsvaultClient(daemon.target) as client:
        log(f"pacsvaultd pid {daemon.proc.pid}, DICOMweb on 127.0.0.1:{daemon.web_port}: loading over gRPC")
        loaded = measure.ingest(client, ordered, params.parallel)
        problems += loaded.failures[:10]
        pool = orthanc_peer.HttpPool(daemon.web_port)
        try:
            log("pacsvault QIDO-RS and WADO-RS")
            qido_phase(pool, "/dicom-web", items, params, pv, problems, "pacsvault")
            wado_phase(pool, "/dicom-web", items, datas, params, pv, problems, "pacsvault")
        finally:
            pool.close()
    shutil.rmtree(work / "pacsvault", ignore_errors=True)
    extra = {"Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                                                    "Ssl": False}} if plugin else None
    with orthanc_peer.running_orthanc(work / "orthanc", version, extra) as orthanc:
        pool = orthanc_peer.HttpPool(orthanc.port)
        try:
            log(f"Orthanc {version} on 127.0.0.1:{orthanc.port}: loading over POST /instances")
            ids = orthanc_phases.ingest(pool, orthanc, items, ordered, params.parallel, {}, problems)
            log("Orthanc /tools/find and /instances/{id}/file")
            params_for_rest = Params(**{**asdict(params), "studies": 1})
            orthanc_phases.find(pool, items, params_for_rest, orth, problems)
            orthanc_phases.retrieve(pool, items, ordered, ids, params_for_rest, orth, problems)
            if plugin:
                log("Orthanc DICOMweb plugin QIDO-RS and WADO-RS")
                plugin_raw: dict = {}
                qido_phase(pool, "/dicom-web", items, params, plugin_raw, problems, "orthanc-dicomweb")
                wado_phase(pool, "/dicom-web", items, datas, params, plugin_raw, problems, "orthanc-dicomweb")
                orth["plugin"] = plugin_raw
        finally:
            pool.close()
    info = {"version": version, "config": orthanc.config, "notes": orthanc.notes, "plugin": plugin}
    return pv, orth, problems, info


def compare(pv: dict, orth: dict) -> list[Comparison]:
    rows: list[Comparison] = []
    plugin = orth.get("plugin", {})
    for key, rest_key, label in (("qido_patient", "find_patient_studies", "study search by PatientID"),
                                 ("qido_study", "find_study_uid", "study search by StudyInstanceUID")):
        for q in ("p50", "p99"):
            target = "<= 1" if q == "p99" else ""
            if plugin:
                rows.append(Comparison("QIDO-RS", f"{label} {q} vs plugin QIDO-RS", pv[key][f"{q}_ms"],
                                       plugin[key][f"{q}_ms"], "ms", higher_is_better=False, target=target))
            rows.append(Comparison("QIDO-RS", f"{label} {q} vs /tools/find", pv[key][f"{q}_ms"],
                                   orth[rest_key][f"{q}_ms"], "ms", higher_is_better=False,
                                   target="" if plugin else target))
    for q in ("p50", "p99"):
        rows.append(Comparison("WADO-RS", f"one instance {q} vs /instances/{{id}}/file", pv["wado_instance"][f"{q}_ms"],
                               orth["get_instance"]["all"][f"{q}_ms"], "ms", higher_is_better=False,
                               target="<= 1" if q == "p50" else ""))
        if plugin:
            rows.append(Comparison("WADO-RS", f"one instance {q} vs plugin WADO-RS", pv["wado_instance"][f"{q}_ms"],
                                   plugin["wado_instance"][f"{q}_ms"], "ms", higher_is_better=False))
    return rows


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    warnings.simplefilter("ignore")
    version, notes = orthanc_peer.ensure_installed(log)
    plugin, plugin_notes = ensure_plugin()
    items, corpus_stats = prepare_corpus(params)
    datas = {i.sop_uid: Path(i.path).read_bytes() for i in items}
    work = Path(tempfile.mkdtemp(prefix="pacsvault-dicomweb-", dir=params.work_dir))
    try:
        pv, orth, problems, info = run(params, items, datas, work, version, plugin)
        machine = machine_info(work)
    finally:
        if not params.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = compare(pv, orth)
    print(render_comparison(rows))
    for note in notes + plugin_notes + info["notes"]:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    record = {"params": {**asdict(params), "json_out": str(params.json_out)}, "machine": machine,
              "corpus": corpus_stats, "orthanc": info, "raw": {"pacsvault": pv, "orthanc": orth},
              "comparison": [{**asdict(r), "ratio": r.ratio, "verdict": r.verdict} for r in rows],
              "problems": problems}
    write_json(params.json_out, record, [])
    log(f"wrote {params.json_out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
