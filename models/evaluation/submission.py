"""The HC18 challenge submission CSV: one ellipse row (mm) per image, with fallbacks where none was measured."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.evaluation.per_image import ImageResult
from models.geometry.ellipse import Ellipse

log = logging.getLogger("models.evaluation")  # one logger for the whole evaluation, as before the split

SUBMISSION_COLUMNS = ("filename", "center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")


def submission_row(name: str, ellipse_mm: Ellipse) -> dict[str, str]:
    """One row of the HC18 submission CSV from an ellipse in mm.

    Convention (stated, since only HC enters the challenge's ranking metric): centre in mm from the
    top-left corner of the image, x to the right (columns) and y down (rows), the centre of pixel
    (col, row) at (col * pixel size, row * pixel size); ``semi_axes_a_mm >= semi_axes_b_mm``;
    ``angle_rad`` in [0, pi) from +x towards +y (clockwise on screen) to the ``a`` semi-axis.
    """
    e = ellipse_mm
    values = (e.cx, e.cy, e.a, e.b, e.angle)
    return {"filename": name, **{k: f"{v:.6f}" for k, v in zip(SUBMISSION_COLUMNS[1:], values)}}


def write_submission(results: Sequence[ImageResult], path: Path) -> int:
    """Write the challenge CSV with one row per image; returns how many rows are fallbacks.

    The challenge needs a row for every image: where no head was measured, the row is a circle at
    the image centre whose size is the median of this run's measured heads (logged as a warning).
    """
    measured = [r.pred_ellipse_mm for r in results if r.pred_ellipse_mm is not None]
    radius = float(np.median([math.sqrt(e.a * e.b) for e in measured])) if measured else 175.0 / (2 * math.pi)
    fallbacks = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUBMISSION_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in results:
            ellipse = r.pred_ellipse_mm
            if ellipse is None:
                fallbacks += 1
                rows, cols = r.shape
                ellipse = Ellipse(cols / 2 * r.pixel_size_mm, rows / 2 * r.pixel_size_mm, radius, radius, 0.0)
            writer.writerow(submission_row(r.name, ellipse))
    if fallbacks:
        log.warning("%d of %d submission rows are fallbacks (no head measured)", fallbacks, len(results))
    return fallbacks
