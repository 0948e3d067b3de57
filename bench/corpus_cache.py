"""The benchmark corpus: generated once per parameter set, then reused from bench/.cache.

The cache key includes a hash of the generator's source and pydicom's version,
so a change to either produces a fresh corpus instead of silently reusing a
stale one. A manifest is written last: a directory without one is an
interrupted generation and is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom

from pacsvault.client import corpus

CACHE_ROOT = Path(__file__).resolve().parent / ".cache"
KIB, MIB = 1024, 1024 * 1024
# Size classes the daemon treats differently: small files are parse-bound,
# large ones are compression- and I/O-bound, and >= 1 MiB spans several frames.
SIZE_CLASSES = ("<64KiB", "64KiB-1MiB", ">=1MiB")
# Per-patient shape of every corpus; only the patient count scales.
STUDIES, SERIES, INSTANCES = 2, 4, 5


@dataclass(frozen=True)
class Shape:
    patients: int
    seed: int
    # Patient ID prefix, also an entropy source of every UID: the same seed with
    # another prefix gives the same mix of sources (same sizes) under new identities.
    prefix: str = "PV"

    @property
    def count(self) -> int:
        return self.patients * STUDIES * SERIES * INSTANCES

    def key(self) -> str:
        named = "" if self.prefix == "PV" else f"-{self.prefix}"
        return f"p{self.patients}-st{STUDIES}-se{SERIES}-i{INSTANCES}-seed{self.seed}{named}-g{_generator_hash()}"


@dataclass(frozen=True)
class Item:
    """One corpus file and the identities the benchmark queries by."""

    path: str
    size: int
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    source: str
    modality: str
    transfer_syntax: str

    @property
    def size_class(self) -> str:
        return size_class(self.size)


def size_class(size: int) -> str:
    if size < 64 * KIB:
        return SIZE_CLASSES[0]
    return SIZE_CLASSES[1] if size < MIB else SIZE_CLASSES[2]


def shape_for(instances: int, seed: int, prefix: str = "PV") -> Shape:
    """The smallest whole number of patients giving at least ``instances``."""
    per_patient = STUDIES * SERIES * INSTANCES
    return Shape(patients=max(1, math.ceil(instances / per_patient)), seed=seed, prefix=prefix)


def load_or_generate(shape: Shape) -> tuple[list[Item], bool]:
    """The corpus items, and whether they came from the cache."""
    directory = CACHE_ROOT / shape.key()
    manifest = directory / "manifest.json"
    if manifest.exists():
        raw = json.loads(manifest.read_text())
        return [Item(**entry) for entry in raw["items"]], True
    if directory.exists():
        shutil.rmtree(directory)  # an interrupted generation
    made = corpus.generate(
        directory / "files", patients=shape.patients, studies_per_patient=STUDIES,
        series_per_study=SERIES, instances_per_series=INSTANCES, seed=shape.seed, prefix=shape.prefix,
    )
    items = [_describe(m) for m in made]
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"shape": asdict(shape), "items": [asdict(i) for i in items]}))
    os.replace(tmp, manifest)
    return items, False


def _describe(made: corpus.GeneratedInstance) -> Item:
    data = made.path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return Item(
        path=str(made.path), size=len(data), patient_id=made.patient_id,
        study_uid=made.study_instance_uid, series_uid=made.series_instance_uid,
        sop_uid=made.sop_instance_uid, source=made.source,
        modality=str(ds.get("Modality", "")), transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
    )


def stats(items: list[Item]) -> dict[str, object]:
    """What the corpus is made of, for the report."""
    by_class = Counter(i.size_class for i in items)
    bytes_by_class = Counter()
    for i in items:
        bytes_by_class[i.size_class] += i.size
    ts_names = {i.transfer_syntax: pydicom.uid.UID(i.transfer_syntax).name for i in items}
    return {
        "instances": len(items),
        "total_bytes": sum(i.size for i in items),
        "patients": len({i.patient_id for i in items}),
        "studies": len({i.study_uid for i in items}),
        "series": len({i.series_uid for i in items}),
        "size_classes": {c: {"count": by_class[c], "bytes": bytes_by_class[c]} for c in SIZE_CLASSES},
        "modalities": dict(Counter(i.modality for i in items).most_common()),
        "transfer_syntaxes": {ts_names[t]: n for t, n in Counter(i.transfer_syntax for i in items).most_common()},
        "sources": dict(Counter(i.source for i in items).most_common()),
    }


def _generator_hash() -> str:
    h = hashlib.blake2b(Path(corpus.__file__).read_bytes(), digest_size=4)
    h.update(pydicom.__version__.encode())
    return h.hexdigest()
