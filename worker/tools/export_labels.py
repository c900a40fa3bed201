"""``fetalhc export-labels``: the frames people accepted or corrected, written in HC18's layout to train on.

``OUT/training_set/SSSS_<id>HC.png`` (the measured frame, grey, cropped to the calibrated region the network saw),
``SSSS_<id>HC_Annotation.png`` beside it (the confirmed ellipse's outline, one pixel wide, as HC18's annotations),
and ``OUT/training_set_pixel_size_and_HC.csv`` (``filename``, ``pixel size(mm)``, ``head circumference (mm)``): what
``models.training.hc18.load_cases`` reads, so that ``fetalhc train --extra-data OUT`` trains on them. ``SSSS`` numbers
the patients in the export (never their IDs), so HC18's subject split keeps a patient's images on one side; ``<id>``
is the measurement. Pixels that are not square are resampled to square ones (the smaller spacing). The ellipse and
HC are the latest decision's: the model's for ``accepted``, the reviewer's for ``corrected``. ``labels.csv`` lists
which measurement, decision and reviewer each file came from.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from db import Job, ReviewedRow, confirmed_rows, session_scope, upgrade
from dicom_io.errors import DicomError
from models.geometry.ellipse import Ellipse
from models.training.hc18 import TRAINING_CSV
from models.training.hc18_shrink import outline_mask, write_training_csv
from worker.core.settings import Settings
from worker.measure.frames import FrameGone, measured_frame, scan_file
from worker.measure.review import ellipse_of

log = logging.getLogger(__name__)
MANIFEST = "labels.csv"


@dataclass
class ExportSummary:
    """What an export wrote and what it passed over (measurement id -> why)."""

    written: list[str] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def _ellipse(reviewed: ReviewedRow) -> Ellipse | None:
    """The confirmed ellipse (mm, region frame): the decision's, which copies the model's on ``accepted``."""
    return ellipse_of(reviewed.review)


def square_frame(pixels: np.ndarray, sx: float, sy: float, ellipse_mm: Ellipse) -> tuple[np.ndarray, float, Ellipse]:
    """The frame on square pixels of the smaller spacing, its pixel size (mm) and the ellipse in its pixels.

    Pixel centres map as in any resize without corner alignment: x' = (x + 0.5) * k - 0.5, with x = mm / spacing.
    """
    size = min(sx, sy)
    rows, cols = pixels.shape
    new_cols, new_rows = max(1, round(cols * sx / size)), max(1, round(rows * sy / size))
    image = pixels
    if (new_cols, new_rows) != (cols, rows):
        image = np.asarray(Image.fromarray(pixels).resize((new_cols, new_rows), Image.Resampling.BILINEAR))
    kx, ky = new_cols / cols, new_rows / rows
    px = ellipse_mm.scaled(1 / sx, 1 / sy)
    if kx == ky == 1:
        return image, size, px
    shifted = Ellipse.make(px.cx + 0.5, px.cy + 0.5, px.a, px.b, px.angle).scaled(kx, ky)
    return image, size, Ellipse.make(shifted.cx - 0.5, shifted.cy - 0.5, shifted.a, shifted.b, shifted.angle)


def export_labels(settings: Settings, out: Path, since: dt.date | None = None) -> ExportSummary:
    """Write every accepted or corrected frame (decided on or after ``since``) under ``out`` in HC18's layout."""
    upgrade(settings.database_url)
    folder = Path(out) / "training_set"
    folder.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary()
    rows: list[tuple[str, float, float]] = []
    manifest: list[dict[str, object]] = []
    subjects: dict[str, int] = {}
    with session_scope(settings.database_url) as session:
        confirmed = confirmed_rows(session, since)
        jobs = {j.id: j for j in session.query(Job).filter(Job.id.in_([c.measurement.job_id for c in confirmed
                                                                        if c.measurement.job_id is not None]))}
    for reviewed in confirmed:
        m, review = reviewed.measurement, reviewed.review
        ellipse = _ellipse(reviewed)
        if ellipse is None or review.hc_mm is None:
            summary.skipped[m.id] = "no ellipse to outline (an HC typed for a row without one)"
            continue
        try:
            path = scan_file(m, jobs.get(m.job_id) if m.job_id is not None else None)
            scan = measured_frame(m, path, settings.max_scan_mb)
        except (FrameGone, DicomError) as exc:
            summary.skipped[m.id] = str(exc) if isinstance(exc, FrameGone) else f"unreadable ({exc.reason})"
            continue
        sx = m.spacing_mm_x or scan.calibration.spacing_mm_x
        sy = m.spacing_mm_y or scan.calibration.spacing_mm_y
        image, pixel_mm, ellipse_px = square_frame(scan.pixels, sx, sy, ellipse)
        subject = subjects.setdefault(m.patient_id or f"unknown-{m.id}", len(subjects) + 1)
        name = f"{subject:04d}_{m.id}HC.png"
        Image.fromarray(image).save(folder / name)
        Image.fromarray(outline_mask(ellipse_px, image.shape)).save(folder / name.replace(".png", "_Annotation.png"))
        rows.append((name, round(pixel_mm, 6), round(float(review.hc_mm), 2)))
        manifest.append({"filename": name, "measurement_id": m.id, "sop_instance_uid": m.sop_instance_uid,
                         "frame": m.frame, "decision": review.decision, "reviewer": review.reviewer,
                         "decided_at": review.decided_at.isoformat() if review.decided_at else ""})
        summary.written.append(name)
    write_training_csv(Path(out), rows)
    with open(Path(out) / MANIFEST, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filename", "measurement_id", "sop_instance_uid", "frame", "decision",
                                                "reviewer", "decided_at"])
        writer.writeheader()
        writer.writerows(manifest)
    log.info("exported %d reviewed frames (%d passed over)", len(summary.written), len(summary.skipped))
    return summary


__all__ = ["MANIFEST", "TRAINING_CSV", "ExportSummary", "export_labels", "square_frame"]
