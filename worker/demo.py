"""``fetalhc demo``: write sample scans with known HC, measure them into SQLite, compare."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, stable_uid, write_us_image
from models.hc18 import load_cases
from models.weights import SHIPPED_WEIGHTS

HC18_CANDIDATES = ("../shared/hc18", "../../shared/hc18")


@dataclass(frozen=True)
class Sample:
    """A generated DICOM and the HC it should measure (mm)."""

    path: Path
    true_hc_mm: float
    origin: str


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


def write_samples(out: Path, hc18: Path | None, count: int = 6) -> list[Sample]:
    """Held-out HC18 images as DICOM (when the data is present) plus synthetic phantoms."""
    out.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    study_date = dt.date(2026, 3, 2)
    if hc18 is not None:
        held_out = set(held_out_names())
        cases = [c for c in load_cases(hc18) if c.name in held_out] or load_cases(hc18)
        step = max(1, len(cases) // count)
        for i, case in enumerate(cases[::step][:count]):
            ident = ScanIdentity(patient_id=f"DEMO{i:03d}", study_date=study_date,
                                 last_menstrual_date=study_date - dt.timedelta(days=140 + 14 * i),
                                 sop_uid=stable_uid("demo", case.name), study_uid=stable_uid("demo-study", case.name),
                                 series_uid=stable_uid("demo-series", case.name))
            path = write_us_image(out / f"{case.image_path.stem}.dcm", case.load_image(), case.pixel_size_mm,
                                  identity=ident)
            samples.append(Sample(path, float(case.hc_mm or 0), f"HC18 {case.name}"))
    for i, (hc, angle) in enumerate([(120.0, 0.2), (210.0, 2.4), (300.0, 1.1)]):
        phantom = make_phantom(hc_mm=hc, spacing_mm=0.12 + 0.04 * i, angle=angle, seed=i)
        ident = ScanIdentity(patient_id=f"PHANTOM{i}", study_date=study_date, sop_uid=stable_uid("phantom", str(i)))
        path = write_us_image(out / f"phantom_{i}.dcm", phantom.image, phantom.spacing_mm, identity=ident)
        samples.append(Sample(path, phantom.hc_mm, "synthetic phantom"))
    return samples


def format_report(samples: list[Sample], rows: list[dict[str, object]]) -> str:
    """A table of measured against true HC, and the mean absolute difference."""
    lines = [f"{'scan':<28} {'source':<22} {'true HC':>8} {'measured':>9} {'error':>7}  status",
             "-" * 90]
    errors = []
    for sample, row in zip(samples, rows):
        hc = row.get("hc_mm")
        err = (float(hc) - sample.true_hc_mm) if isinstance(hc, (int, float)) else None
        if err is not None:
            errors.append(abs(err))
        lines.append(f"{sample.path.name:<28} {sample.origin[:22]:<22} {sample.true_hc_mm:8.1f} "
                     f"{hc if hc is None else format(hc, '9.1f'):>9} {'' if err is None else format(err, '+7.1f'):>7}  "
                     f"{row['status']}{' (' + str(row.get('flags') or row.get('reason')) + ')' if row.get('flags') or row.get('reason') else ''}")
    if errors:
        lines.append(f"mean |error| over {len(errors)} measured scans: {sum(errors) / len(errors):.2f} mm")
    return "\n".join(lines)
