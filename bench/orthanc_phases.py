"""The same timed phases as phases.py, against Orthanc's REST API, on the same samples.

Every phase checks Orthanc's answers (untimed) so a broken peer is never "fast":
every POST /instances must answer Success, retrieved files must be byte-identical,
and find must return the studies the corpus holds.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import psutil
from tqdm import tqdm

import measure
from phases import idle_fraction
from corpus_cache import STUDIES, Item
from orthanc_peer import HttpPool, Orthanc


def ingest(pool: HttpPool, orthanc: Orthanc, items: Sequence[Item], datas: Sequence[bytes], parallel: int,
           raw: dict, problems: list[str]) -> dict[str, dict[str, str]]:
    """POST /instances for every file, ``parallel`` in flight; returns Orthanc's ids by SOP UID."""

    def one(i: int) -> tuple[int, float, bytes]:
        started = time.perf_counter()
        status, body = pool.request("POST", "/instances", datas[i], "application/dicom")
        return status, time.perf_counter() - started, body

    proc = psutil.Process(orthanc.proc.pid)
    cpu_before, bench_before = _cpu(proc), _cpu(psutil.Process())
    machine = psutil.cpu_times()
    bar = tqdm(total=len(datas), desc="orthanc ingest", unit="inst", disable=not sys.stderr.isatty(), leave=False)
    results = []
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as executor:
        for outcome in executor.map(one, range(len(datas))):
            results.append(outcome)
            bar.update()
    wall = time.perf_counter() - started
    idle = idle_fraction(machine, psutil.cpu_times())
    bar.close()
    cpu, bench_cpu = _cpu(proc) - cpu_before, _cpu(psutil.Process()) - bench_before
    ids: dict[str, dict[str, str]] = {}
    statuses: Counter[str] = Counter()
    for item, (status, _, body) in zip(items, results, strict=True):
        answer = json.loads(body) if status == 200 else {}
        statuses[answer.get("Status", f"HTTP {status}")] += 1
        if status != 200 or answer.get("Status") != "Success":
            problems.append(f"orthanc POST /instances {item.sop_uid}: HTTP {status} {body[:200]!r}")
            continue
        ids[item.sop_uid] = {"instance": answer["ID"], "study": answer["ParentStudy"]}
    latencies = [r[1] for r in results]
    raw["ingest"] = {"wall_s": wall, "statuses": dict(statuses), "latency": measure.summary_ms(latencies),
                     "latency_by_size_class": measure.by_size_class(list(items), latencies),
                     "orthanc_cpu_s": cpu, "bench_cpu_s": bench_cpu, "orthanc_rss_bytes": proc.memory_info().rss,
                     "machine_idle_fraction": idle}
    return ids


def retrieve(pool: HttpPool, items: Sequence[Item], datas: Sequence[bytes], ids: dict, params, raw: dict,
             problems: list[str]) -> None:
    """GET /instances/{id}/file, one at a time, on the sample phases.retrieve_phase used."""
    index_of = {item.sop_uid: i for i, item in enumerate(items)}
    chosen = [it for it in measure.sample(items, params.retrieve_samples, params.seed) if it.sop_uid in ids]

    def get(item: Item) -> bytes:
        status, body = pool.request("GET", f"/instances/{ids[item.sop_uid]['instance']}/file")
        if status != 200:
            raise RuntimeError(f"GET file {item.sop_uid}: HTTP {status}")
        return body

    latencies = measure.timed_calls(get, chosen)
    for item in chosen:  # untimed: byte-identical, or the figure means nothing
        if get(item) != datas[index_of[item.sop_uid]]:
            problems.append(f"orthanc GET /instances/{{id}}/file {item.sop_uid}: bytes differ from the stored file")
    raw["get_instance"] = {"all": measure.summary_ms(latencies), "by_size_class": measure.by_size_class(chosen, latencies)}


def whole_study(pool: HttpPool, items: Sequence[Item], datas: Sequence[bytes], ids: dict, params, raw: dict,
                problems: list[str]) -> None:
    """Per-instance download of each study phases._study_figures streamed: list, then GET each file."""
    study_uids = sorted({i.study_uid for i in items})
    chosen = random.Random(params.seed).sample(study_uids, min(params.studies, len(study_uids)))
    orthanc_study = {}
    for item in items:
        if item.sop_uid in ids:
            orthanc_study[item.study_uid] = ids[item.sop_uid]["study"]
    total_bytes = count = 0
    got: dict[str, bytes] = {}
    started = time.perf_counter()
    for study_uid in chosen:
        for instance in pool.json("GET", f"/studies/{orthanc_study[study_uid]}/instances"):
            status, body = pool.request("GET", f"/instances/{instance['ID']}/file")
            if status != 200:
                raise RuntimeError(f"GET file of study {study_uid}: HTTP {status}")
            total_bytes += len(body)
            count += 1
            got[instance["MainDicomTags"]["SOPInstanceUID"]] = body
    wall = time.perf_counter() - started
    by_sop = {it.sop_uid: datas[i] for i, it in enumerate(items)}
    expected = {it.sop_uid for it in items if it.study_uid in set(chosen)}
    if set(got) != expected or any(got[uid] != by_sop[uid] for uid in got):
        problems.append("orthanc whole-study download: instances missing or bytes differ")
    raw["get_study"] = {"studies": len(chosen), "instances": count, "bytes": total_bytes, "wall_s": wall}


def find(pool: HttpPool, items: Sequence[Item], params, raw: dict, problems: list[str]) -> None:
    """POST /tools/find at study level by PatientID and by StudyInstanceUID, the queries find_phase made."""
    rng = random.Random(params.seed)
    patients = rng.choices(sorted({i.patient_id for i in items}), k=params.find_queries)
    studies = rng.choices(sorted({i.study_uid for i in items}), k=params.find_queries)

    def by_patient(patient_id: object) -> object:
        # Expand: the studies' main tags, as ListPatientStudies answers with study attributes.
        return pool.json("POST", "/tools/find", {"Level": "Study", "Expand": True, "Query": {"PatientID": patient_id}})

    def by_study(study_uid: object) -> object:
        return pool.json("POST", "/tools/find",
                         {"Level": "Study", "Expand": True, "Query": {"StudyInstanceUID": study_uid}})

    by_patient_s = measure.timed_calls(by_patient, patients)
    by_study_s = measure.timed_calls(by_study, studies)
    floor = measure.timed_calls(lambda _: pool.request("GET", "/system"), range(params.find_queries))
    for patient_id in sorted(set(patients)):
        found = by_patient(patient_id)
        if len(found) != STUDIES:
            problems.append(f"orthanc find PatientID {patient_id}: {len(found)} studies, expected {STUDIES}")
    for study_uid in sorted(set(studies)):
        found = [m["MainDicomTags"]["StudyInstanceUID"] for m in by_study(study_uid)]
        if found != [study_uid]:
            problems.append(f"orthanc find StudyInstanceUID {study_uid}: got {found}")
    raw["find_patient_studies"] = measure.summary_ms(by_patient_s)
    raw["find_study_uid"] = measure.summary_ms(by_study_s)
    raw["rest_floor_get_system"] = measure.summary_ms(floor)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system
