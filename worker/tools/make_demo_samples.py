"""Make the real sample scans shipped for ``fetalhc demo`` (``worker/demo_samples``): run by hand, never at demo time.

``python -m worker.tools.make_demo_samples --shared ../shared`` writes, reproducibly:

- 4 HC18 training images from the shipped model's validation split (``hc18_unet.split.json`` "val":
  never trained on), at the 15th, 40th, 65th and 90th centile of that split's true HC, with their
  CSV pixel size and true HC;
- 2 negatives from ``us-negatives`` on the head-plane gate's validation side (``group`` whose sha1
  is 0 modulo 5, as ``models.training.gate_data.group_split``), with a plausible pixel spacing: of PSFHS and
  of POCUS lung, the first such file in manifest order, no larger than 512 px a side, that the
  shipped pipeline (segmentation and gate) sets aside as ``not_head``. The gate does not refuse
  every negative (about half of the PSFHS validation images pass it: see the model card), so
  ``samples.json`` records how many earlier candidates passed; rerun this when the gate changes;

as JPEG Baseline US Image Storage files (``dicom_io.writer``, quality 85: each well under 100 KB),
and ``samples.json`` beside them: file, kind, source, true HC, pixel size, licence, attribution.
The true HC and origin are also in each file's (0020,4000) Image Comments.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dicom_io.writer import (
    ScanIdentity,
    build_us_dataset,
    encode_jpeg_baseline,
    stable_uid,
)
from models.segmentation.weights import SHIPPED_WEIGHTS
from models.training.hc18 import load_cases

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "demo_samples"  # worker/demo_samples (package data)
MANIFEST = "samples.json"
JPEG_QUALITY = 85
HEAD_CENTILES = (0.15, 0.40, 0.65, 0.90)
MAX_NEGATIVE_SIDE = 512
# mm per pixel for the negatives (their sources publish none): PSFHS frames are 256 px across a
# transperineal field of about 10 cm; the POCUS lung frames 370 px across a depth of about 13 cm.
NEGATIVE_SPACING_MM = {"PSFHS": 0.40, "POCUS lung (covid19_ultrasound)": 0.35}
STUDY_DATE = dt.date(2026, 3, 2)

HC18_ATTRIBUTION = ("HC18 challenge: T. L. A. van den Heuvel, D. de Bruijn, C. L. de Korte, B. van Ginneken, "
                    "\"Automated measurement of fetal head circumference using 2D ultrasound images\", "
                    "PLoS ONE 13(8): e0200412, 2018; Zenodo concept record 1322000")
ATTRIBUTION = {
    "PSFHS": ("PSFHS: Chen et al., \"PSFHS: intrapartum ultrasound image dataset for AI-based segmentation "
              "of pubic symphysis and fetal head\", Scientific Data 11, 436 (2024); Zenodo 10969427"),
    "POCUS lung (covid19_ultrasound)": (
        "POCUS lung: J. Born et al., \"Accelerating detection of lung pathologies with explainable ultrasound "
        "image analysis\", Applied Sciences 11(2), 672 (2021); covid19_ultrasound dataset"),
}


def is_gate_validation_group(group: str) -> bool:
    """True for a ``us-negatives`` group on the head-plane gate's validation side (one in five)."""
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % 5 == 0


def pick_heads(hc18: Path, split_file: Path = SHIPPED_WEIGHTS.with_suffix(".split.json")) -> list[Any]:
    """The HC18 validation cases at ``HEAD_CENTILES`` of their true HC."""
    val = set(json.loads(split_file.read_text())["val"])
    cases = sorted((c for c in load_cases(hc18) if c.name in val), key=lambda c: (c.hc_mm, c.name))
    return [cases[round(q * (len(cases) - 1))] for q in HEAD_CENTILES]


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def pick_negatives(negatives: Path, out: Path, set_aside: Callable[[Path], bool]) -> list[dict[str, Any]]:
    """Per source, the first gate-validation file in manifest order (at most MAX_NEGATIVE_SIDE a side)
    whose sample DICOM, written into ``out``, ``set_aside`` says the pipeline sets aside.

    Each row gains ``file_out`` (the DICOM's name) and ``passed_before`` (earlier candidates that passed).
    """
    picked: dict[str, dict[str, Any]] = {}
    passed: dict[str, int] = {}
    with (negatives / "manifest.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            source = row["source"]
            if source in picked or source not in NEGATIVE_SPACING_MM or not is_gate_validation_group(row["group"]):
                continue
            image = _grey(negatives / row["file"])
            if max(image.shape) > MAX_NEGATIVE_SIDE:
                continue
            prefix = "psfhs" if source == "PSFHS" else "pocus_lung"
            name = f"{prefix}_{Path(row['file']).stem.split('.')[0]}.dcm"
            spacing = NEGATIVE_SPACING_MM[source]
            path = _write(out / name, image, spacing, row["file"],
                          f"fetalhc demo sample: us-negatives/{row['file']} ({row['note']}); not a head biometry "
                          f"plane; pixel spacing {spacing} mm assumed; {row['license']}")
            if set_aside(path):
                picked[source] = {**row, "file_out": name, "passed_before": passed.get(source, 0)}
            else:
                path.unlink()
                passed[source] = passed.get(source, 0) + 1
    return [picked[s] for s in NEGATIVE_SPACING_MM]


def pipeline_sets_aside(path: Path) -> bool:
    """True when the shipped model and head-plane gate set the file aside as ``not_head`` (nothing stored)."""
    # The pipeline (torch, MONAI, the shipped model) loads only to check the negatives; the rest needs none.
    from worker.core.settings import Settings
    from worker.measure.pipeline import WorkItem, load_context, measure_rows

    ctx = load_context(Settings(head_plane_gate="on", head_plane_threshold=None, device="cpu"))
    return measure_rows(ctx, [WorkItem(path)])[0]["status"] == "not_head"


def _write(path: Path, image: np.ndarray, spacing_mm: float, key: str, comment: str) -> Path:
    ident = ScanIdentity(patient_id=f"DEMO-{key[:40]}", patient_name="Demo^Sample", study_date=STUDY_DATE,
                         sop_uid=stable_uid("demo-sample", key), study_uid=stable_uid("demo-sample-study", key),
                         series_uid=stable_uid("demo-sample-series", key))
    ds = build_us_dataset(image, spacing_mm, identity=ident)
    ds.ImageComments = comment[:10240]  # (0020,4000) LT
    encode_jpeg_baseline(ds, quality=JPEG_QUALITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_samples(shared: Path, out: Path = SAMPLES_DIR,
                 set_aside: Callable[[Path], bool] = pipeline_sets_aside) -> list[dict[str, Any]]:
    """Write the sample DICOMs and ``samples.json`` into ``out``; returns the manifest entries."""
    entries: list[dict[str, Any]] = []
    for case in pick_heads(shared / "hc18"):
        name = f"hc18_{case.image_path.stem}.dcm"
        _write(out / name, case.load_image(), case.pixel_size_mm, case.name,
               f"fetalhc demo sample: HC18 training_set/{case.name}, true HC {case.hc_mm:.2f} mm, "
               f"pixel size {case.pixel_size_mm} mm; CC BY 4.0")
        entries.append({"file": name, "kind": "head", "source": "HC18", "origin": f"training_set/{case.name}",
                        "true_hc_mm": float(case.hc_mm), "pixel_size_mm": float(case.pixel_size_mm),
                        "license": "CC BY 4.0", "attribution": HC18_ATTRIBUTION})
    for row in pick_negatives(shared / "us-negatives", out, set_aside):
        entries.append({"file": row["file_out"], "kind": "not_head", "source": row["source"],
                        "origin": f"us-negatives/{row['file']}", "group": row["group"], "note": row["note"],
                        "true_hc_mm": None, "pixel_size_mm": NEGATIVE_SPACING_MM[row["source"]],
                        "license": row["license"], "attribution": ATTRIBUTION[row["source"]],
                        "picked": "first gate-validation file of its source that the shipped gate sets aside; "
                                  f"{row['passed_before']} earlier candidates passed it"})
    (out / MANIFEST).write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="holds hc18/ and us-negatives/")
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR)
    args = parser.parse_args(argv)
    for entry in make_samples(args.shared, args.out):
        size = (args.out / entry["file"]).stat().st_size
        print(f"{entry['file']:<40} {entry['kind']:<9} {size / 1024:6.1f} KB  {entry['origin']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
