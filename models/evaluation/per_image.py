"""One image scored: ``ImageResult``, ``score_case`` (production measurement against reference) and per_image.csv."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import FetalHCError
from models.evaluation.metrics import ellipse_dice, hausdorff_mm, hc_band
from models.geometry.biometry import Biometry
from models.geometry.ellipse import Ellipse
from models.training.hc18 import Case

log = logging.getLogger("models.evaluation")  # one logger for the whole evaluation, as before the split

PER_IMAGE_COLUMNS = ("name", "pixel_size_mm", "band", "ref_hc_mm", "pred_hc_mm", "error_mm", "abs_error_mm", "dice",
                     "hausdorff_mm", "quality", "flags", "status", "reason")


@dataclass(frozen=True)
class ImageResult:
    """One image scored: prediction against reference (reference fields None where unlabelled).

    ``status``: ``measured``, ``needs_review`` (a biometry flag is raised) or ``failed`` (no
    measurement; ``reason`` says why). Ellipses are in the image's pixel frame; ``pred_ellipse_mm``
    in millimetres from the top-left of the image (x right, y down).
    """

    name: str
    image_path: Path
    pixel_size_mm: float
    shape: tuple[int, int]
    status: str
    ref_hc_mm: float | None = None
    pred_hc_mm: float | None = None
    dice: float | None = None
    hausdorff_mm: float | None = None
    quality: float | None = None
    flags: tuple[str, ...] = ()
    reason: str | None = None
    pred_ellipse_px: Ellipse | None = None
    pred_ellipse_mm: Ellipse | None = None
    ref_ellipse_px: Ellipse | None = None

    @property
    def error_mm(self) -> float | None:
        """HC_pred - HC_ref (mm); None when either is missing."""
        if self.pred_hc_mm is None or self.ref_hc_mm is None:
            return None
        return self.pred_hc_mm - self.ref_hc_mm

    @property
    def band(self) -> str | None:
        """The HC band of the reference HC."""
        return hc_band(self.ref_hc_mm) if self.ref_hc_mm is not None else None

    @property
    def failed(self) -> bool:
        """True when no HC was measured."""
        return self.status == "failed"

    @property
    def needs_review(self) -> bool:
        """True when the measurement carries a flag."""
        return self.status == "needs_review"

    def row(self) -> dict[str, Any]:
        """The per_image.csv row."""
        err = self.error_mm
        return {
            "name": self.name, "pixel_size_mm": self.pixel_size_mm, "band": self.band or "",
            "ref_hc_mm": _fmt(self.ref_hc_mm), "pred_hc_mm": _fmt(self.pred_hc_mm), "error_mm": _fmt(err),
            "abs_error_mm": _fmt(abs(err) if err is not None else None), "dice": _fmt(self.dice, 5),
            "hausdorff_mm": _fmt(self.hausdorff_mm), "quality": _fmt(self.quality, 4), "flags": ";".join(self.flags),
            "status": self.status, "reason": self.reason or "",
        }


def score_case(case: Case, shape: tuple[int, int], outcome: Biometry | Exception) -> ImageResult:
    """Compare one production measurement (or its error) with the case's reference."""
    ps = case.pixel_size_mm
    ref_px: Ellipse | None = None
    if case.hc_mm is not None and case.annotation_path.is_file():
        try:
            ref_px = case.reference_ellipse_px()
        except FetalHCError as exc:
            log.warning("%s: reference annotation cannot be fitted (%s)", case.name, exc)
    common = {"name": case.name, "image_path": case.image_path, "pixel_size_mm": ps, "shape": shape,
              "ref_hc_mm": case.hc_mm, "ref_ellipse_px": ref_px}
    if isinstance(outcome, Exception):
        if isinstance(outcome, FetalHCError):
            reason = outcome.reason
        else:
            reason = f"error:{type(outcome).__name__}"
            log.warning("%s: unexpected %s: %s", case.name, type(outcome).__name__, outcome)
        return ImageResult(status="failed", reason=reason, **common)
    pred_px = outcome.ellipse_px
    return ImageResult(
        status="needs_review" if outcome.needs_review else "measured",
        pred_hc_mm=outcome.hc_mm, quality=outcome.quality, flags=tuple(outcome.flags),
        pred_ellipse_px=pred_px, pred_ellipse_mm=outcome.ellipse_mm,
        dice=ellipse_dice(pred_px, ref_px, shape) if ref_px else None,
        hausdorff_mm=hausdorff_mm(pred_px, ref_px, (ps, ps)) if ref_px else None,
        **common,
    )


def write_per_image_csv(results: Sequence[ImageResult], path: Path) -> None:
    """Write per_image.csv: one ``ImageResult.row`` per image, columns ``PER_IMAGE_COLUMNS``."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r.row() for r in results)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
