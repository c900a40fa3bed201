"""``fetalhc demo``: sample scans with known HC (and two that are no head), measured into SQLite, compared.

The samples always include the real scans shipped in ``worker/demo_samples`` (4 held-out HC18
heads, 2 ultrasound images that are not head planes; made by ``worker.tools.make_demo_samples``), then
synthetic phantoms, and more held-out HC18 images when ``../shared/hc18`` is present.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, stable_uid, write_us_image
from models.segmentation.weights import SHIPPED_WEIGHTS
from models.training.hc18 import load_cases

HC18_CANDIDATES = ("../shared/hc18", "../../shared/hc18")
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "demo_samples"  # worker/demo_samples (package data)
HEAD, NOT_HEAD = "head", "not_head"


@dataclass(frozen=True)
class Sample:
    """A DICOM to measure, what it is (``expect``: head | not_head) and the HC it should measure (mm)."""

    path: Path
    true_hc_mm: float | None
    origin: str
    expect: str = HEAD


def find_hc18(explicit: str | None = None) -> Path | None:
    """An HC18 folder: the one given, ``$FETALHC_HC18_DIR``, or ``../shared/hc18`` when present."""
    for candidate in (explicit, os.environ.get("FETALHC_HC18_DIR"), *HC18_CANDIDATES):
        if candidate and (Path(candidate) / "training_set").is_dir():
            return Path(candidate)
    return None


def held_out_names() -> list[str]:
    """Validation-split file names of the shipped model (never trained on)."""
    split = SHIPPED_WEIGHTS.with_suffix(".split.json")
    return json.loads(split.read_text())["val"] if split.is_file() else []


def shipped_samples(out: Path, folder: Path = SAMPLES_DIR) -> list[Sample]:
    """The real sample scans shipped with fetalhc, copied into ``out`` (their ``samples.json`` says what each is)."""
    manifest = folder / "samples.json"
    if not manifest.is_file():
        return []
    samples = []
    for entry in json.loads(manifest.read_text()):
        path = out / entry["file"]
        shutil.copyfile(folder / entry["file"], path)
        source = entry["source"].split(" (")[0]
        samples.append(Sample(path, entry["true_hc_mm"], f"{source} {Path(entry['origin']).name}", entry["kind"]))
    return samples


def write_samples(out: Path, hc18: Path | None, count: int = 4) -> list[Sample]:
    """The shipped samples, synthetic phantoms, and ``count`` more held-out HC18 images when the data is present."""
    out.mkdir(parents=True, exist_ok=True)
    samples = shipped_samples(out)
    study_date = dt.date(2026, 3, 2)
    for i, (hc, angle) in enumerate([(120.0, 0.2), (210.0, 2.4), (300.0, 1.1)]):
        phantom = make_phantom(hc_mm=hc, spacing_mm=0.12 + 0.04 * i, angle=angle, seed=i)
        ident = ScanIdentity(patient_id=f"PHANTOM{i}", study_date=study_date, sop_uid=stable_uid("phantom", str(i)))
        path = write_us_image(out / f"phantom_{i}.dcm", phantom.image, phantom.spacing_mm, identity=ident)
        samples.append(Sample(path, phantom.hc_mm, "synthetic phantom"))
    if hc18 is not None:
        shipped = {s.origin.split(" ", 1)[1] for s in samples if s.origin.startswith("HC18 ")}
        held_out = set(held_out_names())
        cases = [c for c in load_cases(hc18) if c.name in held_out and c.name not in shipped]
        step = max(1, len(cases) // count)
        for i, case in enumerate(cases[::step][:count]):
            ident = ScanIdentity(patient_id=f"DEMO{i:03d}", study_date=study_date,
                                 last_menstrual_date=study_date - dt.timedelta(days=140 + 14 * i),
                                 sop_uid=stable_uid("demo", case.name), study_uid=stable_uid("demo-study", case.name),
                                 series_uid=stable_uid("demo-series", case.name))
            path = write_us_image(out / f"{case.image_path.stem}.dcm", case.load_image(), case.pixel_size_mm,
                                  identity=ident)
            samples.append(Sample(path, float(case.hc_mm or 0), f"HC18 {case.name} (../shared)"))
    return samples


def _status(row: dict[str, object]) -> str:
    status = str(row["status"])
    if status == NOT_HEAD:
        score = row.get("head_plane_score")
        return "not a head plane" + (f" (head-plane score {score:.3f})" if isinstance(score, float) else "")
    extra = row.get("flags") or row.get("reason")
    return status + (f" ({extra})" if extra else "")


def format_report(samples: list[Sample], rows: list[dict[str, object]]) -> str:
    """A table of measured against true HC, the mean absolute difference, and the non-heads set aside."""
    lines = [f"{'scan':<36} {'source':<26} {'true HC':>8} {'measured':>9} {'error':>7}  status", "-" * 110]
    errors = []
    for sample, row in zip(samples, rows):
        hc = row.get("hc_mm")
        err = (float(hc) - sample.true_hc_mm) if isinstance(hc, (int, float)) and sample.true_hc_mm else None
        if err is not None:
            errors.append(abs(err))
        true = "-" if sample.true_hc_mm is None else format(sample.true_hc_mm, "8.1f")
        measured = "-" if not isinstance(hc, (int, float)) else format(hc, "9.1f")
        lines.append(f"{sample.path.name[:36]:<36} {sample.origin[:26]:<26} {true:>8} {measured:>9} "
                     f"{'' if err is None else format(err, '+7.1f'):>7}  {_status(row)}")
    if errors:
        lines.append(f"mean |error| over {len(errors)} measured heads: {sum(errors) / len(errors):.2f} mm")
    heads = [r for s, r in zip(samples, rows) if s.expect == HEAD]
    others = [r for s, r in zip(samples, rows) if s.expect == NOT_HEAD]
    if others:
        refused = sum(r["status"] == NOT_HEAD for r in others)
        lines.append(f"images that are not head planes set aside as not_head: {refused} of {len(others)}")
    lost = sum(r["status"] == NOT_HEAD for r in heads)
    if lost:
        lines.append(f"heads the head-plane gate refused: {lost} of {len(heads)}")
    return "\n".join(lines)
