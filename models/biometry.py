"""From a skull probability map to an ellipse in millimetres, HC/BPD/OFD and a quality score."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skimage import measure

from models.ellipse import Ellipse, fit_ellipse_robust
from models.errors import MeasurementError

# HC18 training HC runs 44.3-346.4 mm (REFERENCES.md); INTERGROWTH-21st mean + 3 SD at 40+0 weeks
# is about 373 mm. Outside (40, 380) mm no gestation fits.
PLAUSIBLE_HC_MM = (40.0, 380.0)
LOW_CONFIDENCE = 0.6
MIN_INLIERS = 0.85
# Boundary points closer than this to the image edge are the picture's edge, not skull (pixels).
BORDER_PX = 1.0
# Below this fraction of the fitted ellipse's outline inside the image, the head is too cut to trust.
MIN_VISIBLE_OUTLINE = 0.7


@dataclass(frozen=True)
class Biometry:
    """One head measured on one image.

    ``ellipse_mm``: the fitted outer skull ellipse in millimetres (x right, y down, from the
    top-left of the image the network saw); ``ellipse_px`` the same in that image's pixels.
    ``quality``: 0..1, the product of segmentation confidence, fit agreement and (after
    ``models.segment.with_agreement``) agreement between test-time flips; ``flags``
    name every reason the value should be reviewed (empty when none).
    """

    ellipse_mm: Ellipse
    ellipse_px: Ellipse
    hc_mm: float
    bpd_mm: float
    ofd_mm: float
    quality: float
    flags: tuple[str, ...] = field(default_factory=tuple)
    tta_spread_mm: float | None = None  # max - min HC over test-time flips (set by models.segment)
    head_plane_score: float | None = None  # the head-plane gate's probability (set by models.segment)

    @property
    def needs_review(self) -> bool:
        """True when any flag is raised."""
        return bool(self.flags)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected foreground component of a boolean mask."""
    labels = measure.label(mask, connectivity=2)
    if labels.max() == 0:
        return np.zeros_like(mask, dtype=bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(counts.argmax())


def boundary_points(prob: np.ndarray, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel boundary (x, y) of the largest component of ``prob > level``, and that mask."""
    mask = largest_component(prob > level)
    if mask.sum() < 20:
        raise MeasurementError("no fetal head was found in the image", reason="no_head_found")
    rows, cols = np.nonzero(mask)
    r0, r1 = max(rows.min() - 2, 0), min(rows.max() + 3, prob.shape[0])
    c0, c1 = max(cols.min() - 2, 0), min(cols.max() + 3, prob.shape[1])
    # Contour the probability of the chosen component only (others zeroed), padded so that a
    # head cut by the image border still gives a closed contour.
    sub = np.where(mask[r0:r1, c0:c1], prob[r0:r1, c0:c1], 0.0)
    contours = measure.find_contours(np.pad(sub, 1), level)
    if not contours:
        raise MeasurementError("no head boundary could be traced", reason="no_head_found")
    contour = max(contours, key=len)
    ys = contour[:, 0] - 1 + r0
    xs = contour[:, 1] - 1 + c0
    # Where the head leaves the image the contour runs along the border: that is the edge of the
    # picture, not skull, so those points are left out of the fit.
    rows_max, cols_max = prob.shape[0] - 1, prob.shape[1] - 1
    inside = (xs > BORDER_PX) & (ys > BORDER_PX) & (xs < cols_max - BORDER_PX) & (ys < rows_max - BORDER_PX)
    if inside.sum() < 20:
        raise MeasurementError("the head boundary lies almost entirely on the image border", reason="no_head_found")
    return np.stack([xs[inside], ys[inside]], axis=1), mask


def measure_head(prob: np.ndarray, spacing_mm_x: float, spacing_mm_y: float) -> Biometry:
    """Fit the outer skull ellipse to the probability map and measure it in millimetres.

    The fit is done in millimetre coordinates, so anisotropic pixels are handled exactly.

    Args:
        prob: (rows, cols) probability that a pixel lies inside the skull, at image resolution.
        spacing_mm_x: column spacing (mm per pixel); spacing_mm_y: row spacing.
    Raises:
        MeasurementError: no head, or no ellipse fits it.
    """
    xy_px, mask = boundary_points(prob)
    xy_mm = xy_px * np.array([spacing_mm_x, spacing_mm_y])
    ellipse_mm, inliers = fit_ellipse_robust(xy_mm)
    ellipse_px = ellipse_mm.scaled(1 / spacing_mm_x, 1 / spacing_mm_y)
    hc = ellipse_mm.perimeter

    confidence = float(prob[mask].mean()) if mask.any() else 0.0
    # Agreement of the segmented area with the fitted ellipse (IoU).
    fitted = ellipse_px.filled_mask(prob.shape)
    union = np.logical_or(fitted, mask).sum()
    iou = float(np.logical_and(fitted, mask).sum() / union) if union else 0.0
    quality = round(confidence * iou, 4)

    flags: list[str] = []
    if quality < LOW_CONFIDENCE:
        flags.append("low_confidence")
    if inliers < MIN_INLIERS:
        flags.append("irregular_boundary")
    if visible_fraction(ellipse_px, prob.shape) < MIN_VISIBLE_OUTLINE:
        flags.append("cut_by_border")
    if not (PLAUSIBLE_HC_MM[0] <= hc <= PLAUSIBLE_HC_MM[1]):
        flags.append("implausible_hc")
    return Biometry(
        ellipse_mm=ellipse_mm,
        ellipse_px=ellipse_px,
        hc_mm=hc,
        bpd_mm=2 * ellipse_mm.b,
        ofd_mm=2 * ellipse_mm.a,
        quality=quality,
        flags=tuple(flags),
    )


def visible_fraction(e: Ellipse, shape: tuple[int, ...]) -> float:
    """Fraction of the ellipse's outline (pixel frame) that lies inside an image of ``shape``."""
    pts = e.points(720)
    inside = (pts[:, 0] >= -0.5) & (pts[:, 1] >= -0.5) & (pts[:, 0] <= shape[1] - 0.5) & (pts[:, 1] <= shape[0] - 0.5)
    return float(inside.mean())
