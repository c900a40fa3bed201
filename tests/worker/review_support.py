"""Flagged measurements for review tests: phantom DICOMs written to disk and their rows stored as the pipeline
would store them (the true ellipse as the model's, in mm from the calibrated region's corner), no model run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from db import Measurement, session_scope, upgrade, upsert_measurement
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from models.geometry.biometry import head_sizes
from models.geometry.ellipse import Ellipse
from worker.measure.dating import GestationalAge, growth_facts

SHAPE = (300, 440)  # rows, cols: small, so that reading and drawing take milliseconds
SPACING_MM = 0.3
REGION = (20, 10, SHAPE[1] - 21, SHAPE[0] - 11)  # the calibrated region the rows were measured on


@dataclass(frozen=True)
class StoredScan:
    """One stored row: its id, file, true HC (mm) and the ellipse stored as the model's (mm, region frame)."""

    id: int
    path: Path
    hc_mm: float
    ellipse_mm: Ellipse


def store_flagged_scans(url: str, folder: Path, count: int, patient_id: str = "P-REVIEW",
                        status: str = "needs_review", flags: str = "low_confidence", ga_days: float | None = 140.0,
                        hc_error_mm: float = 0.0, first_seed: int = 0) -> list[StoredScan]:
    """``count`` phantom heads written as DICOMs under ``folder`` and stored as rows of ``status``, oldest first.

    The stored ellipse is the truth scaled by (true HC + ``hc_error_mm``) / true HC, so a reviewer has
    something to correct; growth facts are the pipeline's (``growth_facts``) for ``ga_days``.
    """
    upgrade(url)
    stored: list[StoredScan] = []
    for i in range(count):
        seed = first_seed + i
        ph = make_phantom(shape=SHAPE, hc_mm=110.0 + 6 * seed, spacing_mm=SPACING_MM, angle=0.25 * seed, seed=seed)
        uid = f"1.2.826.0.1.3680043.10.22.{seed + 1}"
        path = write_us_image(folder / f"scan{seed}.dcm", ph.image, SPACING_MM,
                              identity=ScanIdentity(patient_id=patient_id, study_date=dt.date(2026, 3, 1 + seed % 28),
                                                    sop_uid=uid, study_uid=uid + ".1", series_uid=uid + ".2"),
                              region_bounds=REGION)
        cx, cy, a, b, angle = ph.outer
        k = (ph.hc_mm + hc_error_mm) / ph.hc_mm
        e = Ellipse.make((cx - REGION[0]) * SPACING_MM, (cy - REGION[1]) * SPACING_MM, a * SPACING_MM * k,
                         b * SPACING_MM * k, angle)
        sizes = head_sizes(e)
        row = {"sop_instance_uid": uid, "frame": 1, "model_version": "m" * 64, "model_name": "test",
               "study_instance_uid": uid + ".1", "patient_id": patient_id, "study_date": dt.date(2026, 3, 1 + seed % 28),
               "path": str(path), "spacing_mm_x": SPACING_MM, "spacing_mm_y": SPACING_MM, "spacing_source": "us_region",
               "region_x0": REGION[0], "region_y0": REGION[1], "region_x1": REGION[2], "region_y1": REGION[3],
               "status": status, "flags": flags, "quality": 0.5, "head_plane_score": 0.9}
        if status != "not_head":
            row.update({"center_x_mm": e.cx, "center_y_mm": e.cy, "semi_axis_a_mm": e.a, "semi_axis_b_mm": e.b,
                        "angle_rad": e.angle, "hc_mm": round(sizes.hc_mm, 2), "bpd_mm": round(sizes.bpd_mm, 2),
                        "ofd_mm": round(sizes.ofd_mm, 2)})
            ga = GestationalAge(ga_days, "given" if ga_days is not None else "none")
            row.update(growth_facts(sizes.hc_mm, ga, "intergrowth").columns())
        else:
            row.update({"reason": "not_head_plane", "flags": None, "head_plane_score": 0.05})
        with session_scope(url) as session:
            upsert_measurement(session, row)
        with session_scope(url) as session:
            ident = session.query(Measurement.id).filter(Measurement.sop_instance_uid == uid).scalar()
        stored.append(StoredScan(int(ident), path, ph.hc_mm, e))
    return stored
