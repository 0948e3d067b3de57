"""Deterministic corpora of real DICOM for tests, benchmarks and site acceptance.

Copies of pydicom's bundled real images get new patient, study, series and
instance identities; pixel data is left untouched. Note that copies differ
only in identity, so dedup or compression figures measured on such a corpus
look better than on real traffic.

    python -m pacsvault.client.corpus OUT_DIR --patients 10 --seed 1
"""

from __future__ import annotations

import argparse
import io
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

# Real images of many modalities, sizes and transfer syntaxes, with weights
# that give a realistic mix: mostly small CT / MR slices, some multi-frame
# ultrasound, a few large radiographs. pydicom ships the first group; the
# PyPI package pydicom-data (a dev dependency) adds the rest.
SOURCE_FILES: dict[str, int] = {
    "CT_small.dcm": 30,               # CT slice, explicit little endian
    "MR_small.dcm": 30,               # MR slice
    "MR_small_RLE.dcm": 10,           # RLE lossless
    "MR_small_bigendian.dcm": 3,      # explicit big endian
    "JPEG2000.dcm": 10,               # JPEG 2000
    "SC_rgb_small_odd_jpeg.dcm": 3,   # JPEG baseline, secondary capture
    "emri_small.dcm": 8,              # multi-frame MR
    "693_J2KR.dcm": 20,               # CT, JPEG 2000 lossless
    "MR2_J2KI.dcm": 10,               # MR, JPEG 2000 lossy
    "JPEG-LL.dcm": 5,                 # NM, JPEG lossless
    "US1_J2KR.dcm": 5,                # ultrasound, JPEG 2000
    "examples_ybr_color.dcm": 4,      # multi-frame ultrasound (30 frames), JPEG
    "OBXXXX1A_rle_2frame.dcm": 3,     # ultrasound, RLE, 2 frames
    "MR2_UNCR.dcm": 4,                # large MR, uncompressed
    "RG1_J2KR.dcm": 2,                # CR radiograph, JPEG 2000 lossless
    "RG3_UNCR.dcm": 2,                # CR radiograph, uncompressed (6 MB)
    "color3d_jpeg_baseline.dcm": 1,   # 3D ultrasound, 120 frames (6 MB)
}
NAMES = ("Doe^Jane", "Smith^John", "Müller^Jürgen", "Ødegård^Åse", "Dupont^Hélène",
         "García^José", "山田^太郎", "Nguyen^Van", "O'Brien^Sean", "Kowalski^Zofia")
MODALITY_DATES = ("20190301", "20200615", "20211130", "20220101", "20230517", "20240229", "20251010")


@dataclass(frozen=True)
class GeneratedInstance:
    path: Path
    patient_id: str
    patient_name: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    source: str


def source_roots() -> list[Path]:
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return roots


def available_sources() -> dict[Path, int]:
    """The source files present here, with their weights."""
    found = {}
    for name, weight in SOURCE_FILES.items():
        for root in source_roots():
            if (root / name).exists():
                found[root / name] = weight
                break
    return found


def generate(out_dir: Path, *, patients: int = 4, studies_per_patient: int = 2, series_per_study: int = 2,
             instances_per_series: int = 3, seed: int = 0, sources: dict[Path, int] | None = None,
             prefix: str = "PV") -> list[GeneratedInstance]:
    """Writes patients x studies x series x instances files under ``out_dir``."""
    rng = random.Random(seed)
    sources = sources or available_sources()
    paths, weights = list(sources), list(sources.values())
    raw = {p: p.read_bytes() for p in paths}
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for p in range(patients):
        patient_id = f"{prefix}{seed:03d}-{p:05d}"
        name = NAMES[(p + seed) % len(NAMES)]
        for s in range(studies_per_patient):
            study_uid = generate_uid(entropy_srcs=[prefix, str(seed), patient_id, str(s)])
            study_date = rng.choice(MODALITY_DATES)
            accession = f"A{seed:03d}{p:05d}{s:02d}"
            for se in range(series_per_study):
                source = rng.choices(paths, weights)[0]
                series_uid = generate_uid(entropy_srcs=[study_uid, str(se)])
                for i in range(instances_per_series):
                    sop_uid = generate_uid(entropy_srcs=[series_uid, str(i)])
                    dataset = _copy_with_identity(raw[source], patient_id, name, study_uid, study_date,
                                                  accession, series_uid, se + 1, sop_uid, i + 1)
                    path = out_dir / patient_id / f"study{s}" / f"series{se}" / f"{i:04d}.dcm"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        dataset.save_as(path, enforce_file_format=True)
                    made.append(GeneratedInstance(path, patient_id, name, study_uid, series_uid, sop_uid, source.name))
    return made


def _copy_with_identity(source: bytes, patient_id: str, name: str, study_uid: str, study_date: str,
                        accession: str, series_uid: str, series_number: int, sop_uid: str,
                        instance_number: int) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(source))
    if not name.isascii():
        # UTF-8 for names outside Latin-1, as a modality would send them.
        dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientID = patient_id
    dataset.PatientName = name
    dataset.StudyInstanceUID = study_uid
    dataset.StudyDate = study_date
    dataset.AccessionNumber = accession
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = series_number
    dataset.SOPInstanceUID = sop_uid
    dataset.InstanceNumber = instance_number
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate a deterministic DICOM corpus from real images")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--studies", type=int, default=2)
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    made = generate(args.out_dir, patients=args.patients, studies_per_patient=args.studies,
                    series_per_study=args.series, instances_per_series=args.instances, seed=args.seed)
    size = sum(m.path.stat().st_size for m in made)
    print(f"{len(made)} instances, {size / 1e6:.1f} MB in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
