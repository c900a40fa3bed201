"""The stored scan's measured frame as a PNG, with the fitted ellipse, its axes and the plane label drawn (Pillow).

The frame is read again from the job's spool or archive path (``worker.measure.frames``: the reader that
measured it, bounded by ``FETALHC_MAX_SCAN_MB``, cropped to the calibrated region the network saw), so that the
row's ellipse (mm from that region's top-left) lands where it was measured: pixels = mm / spacing, per axis. The
model's ellipse is drawn in orange-red with its two axes, a reviewer's correction in green. The pixels can carry
burned-in patient text: the routes serve this only to authenticated callers, never cached.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from db import Job, Measurement, Review, ReviewDecision
from dicom_io.errors import DicomError
from dicom_io.scan import Scan
from models.geometry.ellipse import Ellipse
from worker.api.messages import ApiError
from worker.measure.frames import FrameGone, measured_frame, scan_file
from worker.measure.review import ellipse_of

MODEL_COLOUR = (255, 77, 46)  # as the overlay PNG of /api/measure (models.geometry.overlay)
REVIEW_COLOUR = (54, 211, 108)
AXIS_COLOUR = (255, 214, 10)
WIDTH_RANGE = (48, 2048)


def points_px(ellipse_mm: Ellipse, sx: float, sy: float) -> list[tuple[float, float]]:
    """The outline in the region's pixels (x / spacing per axis: exact for anisotropic pixels)."""
    return [(x / sx, y / sy) for x, y in ellipse_mm.points().tolist()]


def axes_px(e: Ellipse, sx: float, sy: float) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The major (OFD) and minor (BPD) axes as pixel segments."""
    c, s = math.cos(e.angle), math.sin(e.angle)
    out = []
    for length, (ux, uy) in ((e.a, (c, s)), (e.b, (-s, c))):
        p0 = ((e.cx - length * ux) / sx, (e.cy - length * uy) / sy)
        p1 = ((e.cx + length * ux) / sx, (e.cy + length * uy) / sy)
        out.append((p0, p1))
    return out


def scan_path(row: Measurement, job: Job | None) -> Path:
    """The file the row was measured from; 410 with the reason when it is no longer there."""
    try:
        return scan_file(row, job)
    except FrameGone as exc:
        raise ApiError(410, "scan_gone", str(exc)) from None


def frame_of(row: Measurement, path: Path, max_scan_mb: float) -> Scan:
    """The frame and region the row was measured on, decoded again (422 when the file no longer reads)."""
    try:
        return measured_frame(row, path, max_scan_mb)
    except DicomError as exc:
        raise ApiError(422, "scan_unreadable", f"the scan of measurement {row.id} cannot be read again: "
                       f"{exc.reason}") from None


def plane_caption(row: Measurement) -> str:
    """The plane label (a plane classifier's, when the row has one) or the head-plane gate's score."""
    label, prob = row.plane_label, row.plane_probability
    if label:
        return f"plane: {label}" + (f" ({prob:.2f})" if prob is not None else "")
    if row.head_plane_score is not None:
        return f"head-plane score {row.head_plane_score:.2f}"
    return ""


def render_png(row: Measurement, scan: Scan, review: Review | None, overlay: bool = True,
               width: int | None = None) -> bytes:
    """The frame as PNG; with ``overlay``, the model's ellipse and axes, a correction's ellipse and a caption."""
    image = Image.fromarray(scan.pixels).convert("RGB")
    sx = row.spacing_mm_x or scan.calibration.spacing_mm_x
    sy = row.spacing_mm_y or scan.calibration.spacing_mm_y
    if overlay:
        draw = ImageDraw.Draw(image)
        line = max(2, round(min(image.size) / 250))
        model = ellipse_of(row)
        if model is not None:
            draw.polygon(points_px(model, sx, sy), outline=MODEL_COLOUR, width=line)
            for p0, p1 in axes_px(model, sx, sy):
                draw.line([p0, p1], fill=AXIS_COLOUR, width=max(1, line // 2))
        corrected = ellipse_of(review) if review is not None and review.decision == ReviewDecision.CORRECTED else None
        if corrected is not None:
            draw.polygon(points_px(corrected, sx, sy), outline=REVIEW_COLOUR, width=line)
        caption = " · ".join(t for t in (plane_caption(row), f"HC {row.hc_mm:.1f} mm" if row.hc_mm else "",
                                         f"reviewed {review.decision}" if review is not None else "") if t)
        if caption:
            font = ImageFont.load_default(size=max(12, image.size[0] // 45))
            box = draw.textbbox((8, 6), caption, font=font)
            draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
            draw.text((8, 6), caption, fill=(255, 255, 255), font=font)
    if width is not None and width < image.size[0]:
        image = image.resize((width, max(1, round(image.size[1] * width / image.size[0]))), Image.Resampling.BOX)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
