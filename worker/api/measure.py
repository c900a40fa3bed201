"""``POST /api/measure``: measure one uploaded scan with the loaded model; the answer as a dict and a status."""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from db import create_job, session_scope
from db.rows import MeasurementRow
from dicom_io import SpacingSource
from dicom_io.encoded import host_pixels  # a scan's pixels may be a JPEG codestream, or on a GPU
from worker.api.app import ApiApp
from worker.api.messages import ApiError
from worker.api.uploads import Upload, write_dicom
from worker.measure.pipeline import WorkItem, measure_rows, store_rows

log = logging.getLogger("worker.api")  # one logger for the whole API (the CLI sets it to INFO)


def _overlay_data_url(item: WorkItem, row: MeasurementRow) -> str | None:
    """The measured frame with the fitted ellipse (or the image alone when no head was measured or it is no head)."""
    from models.geometry.overlay import overlay_png

    if item.best is not None:
        scan, bio = item.best
        caption = (f"HC {bio.hc_mm:.1f} mm   BPD {bio.bpd_mm:.1f} mm   OFD {bio.ofd_mm:.1f} mm   "
                   f"quality {bio.quality:.2f}")
        image, ellipse = host_pixels(scan), bio.ellipse_px
    elif item.refused is not None:
        scan, refusal = item.refused
        image, ellipse, caption = host_pixels(scan), None, f"not a head plane (head-plane score {refusal.score:.3f})"
    elif item.first_scan is not None:
        image, ellipse, caption = host_pixels(item.first_scan), None, f"not measured: {row.get('reason')}"
    else:
        return None
    buf = io.BytesIO()
    overlay_png(image, ellipse, None, buf, caption)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _split(text: str | None) -> list[str]:
    return [part for part in (text or "").split(",") if part]


def measure_body(row: MeasurementRow, item: WorkItem, upload: Upload, overlay: str | None) -> dict[str, Any]:
    """The JSON answer of /api/measure from the pipeline's row."""
    ellipse = None
    if item.best is not None:
        scan, bio = item.best
        px = bio.ellipse_px
        ellipse = {"center_x_mm": row["center_x_mm"], "center_y_mm": row["center_y_mm"],
                   "semi_axis_a_mm": row["semi_axis_a_mm"], "semi_axis_b_mm": row["semi_axis_b_mm"],
                   "angle_rad": row["angle_rad"],
                   "px": {"cx": px.cx, "cy": px.cy, "a": px.a, "b": px.b, "angle": px.angle},
                   "origin_xy": list(scan.origin_xy),
                   "frame": "mm and pixels from the top-left of the calibrated region (origin_xy in the full frame)"}
    region = [row.get(f"region_{k}") for k in ("x0", "y0", "x1", "y1")]
    return {
        "status": row["status"], "reason": row.get("reason"), "message": row.get("detail"),
        "hc_mm": row.get("hc_mm"), "bpd_mm": row.get("bpd_mm"), "ofd_mm": row.get("ofd_mm"),
        "quality": row.get("quality"), "head_plane_score": row.get("head_plane_score"),
        "plane_label": row.get("plane_label"), "plane_probability": row.get("plane_probability"),
        "plane_probabilities": row.get("plane_probabilities"),
        "flags": _split(row.get("flags")),
        "hc_tta_spread_mm": row.get("hc_tta_spread_mm"),
        "ellipse": ellipse,
        "spacing": {"x_mm": row.get("spacing_mm_x"), "y_mm": row.get("spacing_mm_y"),
                    "source": row.get("spacing_source"), "region": region if region[0] is not None else None},
        "ga": {"days": row.get("ga_days"), "source": row.get("ga_source"), "estimate_days": row.get("ga_estimate_days"),
               "formula": row.get("ga_formula"), "hc_z_score": row.get("hc_z_score"),
               "hc_centile": row.get("hc_centile"), "standard": row.get("growth_standard"),
               "flags": _split(row.get("growth_flags")), "centile_reason": row.get("centile_reason")},
        "scan": {"sop_instance_uid": row.get("sop_instance_uid"), "study_instance_uid": row.get("study_instance_uid"),
                 "frame": row.get("frame"), "patient_id": row.get("patient_id") or None,
                 "study_date": row.get("study_date")},
        "input": {"kind": upload.kind, "bytes": len(upload.data), "sha256": upload.sha256},
        "model": {"name": row.get("model_name"), "version": row.get("model_version")},
        "timing_ms": {"read": row.get("read_ms"), "infer": row.get("infer_ms"), "total": row.get("total_ms")},
        "stored": upload.store, "job_id": item.job_id,
        "overlay_png": overlay,
    }


def measure_upload(app: ApiApp, upload: Upload, deadline: float | None = None) -> tuple[dict[str, Any], int]:
    """Measure the upload with the loaded model (one at a time); store it only with ``store=1``.

    ``deadline`` (``time.monotonic()``): waiting for the measurement before then; 503 ``busy`` after it.
    """
    ctx = app.context()
    with tempfile.TemporaryDirectory(prefix="fetalhc-api-") as tmp:
        folder = Path(tmp)  # measured, then forgotten
        if upload.store:  # kept in the spool, where the job row points
            app.ensure_schema()
            folder = app.settings.spool_dir / "api"
            folder.mkdir(parents=True, exist_ok=True)
        path = write_dicom(upload, folder)
        job_id = None
        if upload.store:
            with session_scope(app.settings.database_url) as session:
                job_id = create_job(session, str(path), "api", ga_days_given=upload.ga_days)
        item = WorkItem(path, job_id, upload.ga_days)
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not app.measure_lock.acquire(timeout=wait):
            raise ApiError(503, "busy", "another measurement is running; try again in a moment")
        try:  # one forward pass (and one matplotlib figure) at a time
            row = measure_rows(ctx, [item])[0]
            overlay = _overlay_data_url(item, row)
        finally:
            app.measure_lock.release()
        if row.get("detail"):  # the reader names the file; the caller knows it as their upload
            row = row.replace(detail=str(row["detail"]).replace(path.name, "the upload"))
        if upload.kind != "dicom" and row.get("spacing_source"):
            row = row.replace(spacing_source=SpacingSource.GIVEN.value)  # the caller's spacing_mm, not the file's
        if upload.store:
            row = store_rows(app.settings.database_url, [item], [row], app.settings.growth_standard)[0]  # + its report's facts
    log.info("api measure kind=%s status=%s reason=%s stored=%s ms=%s", upload.kind, row["status"],
             row.get("reason"), upload.store, row.get("total_ms"))
    return measure_body(row, item, upload, overlay), 422 if row["status"] == "failed" else 200
