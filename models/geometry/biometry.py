"""From a skull probability map to an ellipse in millimetres, HC/BPD/OFD and a quality score."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from models.errors import MeasurementError
from models.geometry.ellipse import Ellipse, fit_ellipse_robust

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
    ``models.segmentation.segment.with_agreement``) agreement between test-time flips; ``flags``
    name every reason the value should be reviewed (empty when none).
    """

    ellipse_mm: Ellipse
    ellipse_px: Ellipse
    hc_mm: float
    bpd_mm: float
    ofd_mm: float
    quality: float
    flags: tuple[str, ...] = field(default_factory=tuple)
    tta_spread_mm: float | None = None  # max - min HC over test-time flips (set by models.segmentation.segment)
    head_plane_score: float | None = None  # the head-plane gate's probability (set by models.plane.gating)

    @property
    def needs_review(self) -> bool:
        """True when any flag is raised."""
        return bool(self.flags)


@dataclass(frozen=True)
class HeadSizes:
    """HC, BPD and OFD (mm) of a skull ellipse in millimetres: its Ramanujan perimeter and its two axes."""

    hc_mm: float
    bpd_mm: float
    ofd_mm: float


def head_sizes(ellipse_mm: Ellipse) -> HeadSizes:
    """HC (the perimeter, Ramanujan II as HC18 measures it), BPD (the minor axis, 2b) and OFD (the major, 2a).

    Outer-to-outer along both axes, as the fitted ellipse is the outer skull's: what the pipeline stores and
    what a reviewer's corrected ellipse gives (``worker.measure.review``).
    """
    return HeadSizes(ellipse_mm.perimeter, 2 * ellipse_mm.b, 2 * ellipse_mm.a)


def largest_component(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """The largest foreground component (8- or 4-connected) of a boolean mask (the first in raster order on a tie)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    if count < 2:
        return np.zeros_like(mask, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def boundary_points(field: np.ndarray, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel boundary (x, y) of the largest side-connected component of ``field > level``, and that mask.

    Side-connected (4-connected), as marching squares outlines the pixels above the level by default.
    ``field``: a probability map (level 0.5), or logits (level 0: ``measure_head_on_grid``, so that the
    linear interpolation between samples follows the bilinear logit field exactly).
    """
    mask = largest_component(field > level, connectivity=4)
    if mask.sum() < 20:
        raise MeasurementError("no fetal head was found in the image", reason="no_head_found")
    r0, r1, c0, c1 = _bounds(mask, 2, field.shape)
    # The chosen component's outline: other components are set below the level, the component's surroundings
    # keep their values, so the level follows the interpolated map (setting them to 0, as before, pulled the
    # outline inwards: -0.3 mm of HC); padded so that a head cut by the image border is outlined there too.
    low = min(float(field.min()), level) - 1.0
    window, chosen = field[r0:r1, c0:c1], mask[r0:r1, c0:c1]
    sub = np.pad(np.where(chosen | (window <= level), window, low), 1, constant_values=low)
    ys, xs = outline_points(sub, np.pad(chosen, 1), level)
    if len(ys) == 0:
        raise MeasurementError("no head boundary could be traced", reason="no_head_found")
    ys, xs = ys - 1 + r0, xs - 1 + c0
    # Where the head leaves the image the contour runs along the border: that is the edge of the
    # picture, not skull, so those points are left out of the fit.
    rows_max, cols_max = field.shape[0] - 1, field.shape[1] - 1
    inside = (xs > BORDER_PX) & (ys > BORDER_PX) & (xs < cols_max - BORDER_PX) & (ys < rows_max - BORDER_PX)
    if inside.sum() < 20:
        raise MeasurementError("the head boundary lies almost entirely on the image border", reason="no_head_found")
    return np.stack([xs[inside], ys[inside]], axis=1), mask


def outline_points(field: np.ndarray, component: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the points where ``field`` crosses ``level`` on the outer outline of ``component``.

    ``component``: side-connected (4-connected) pixels above the level, not touching the array's border.
    The points are the vertices of the contour ``skimage.measure.find_contours(field, level)`` traces
    around it (marching squares: linear interpolation along each pixel edge that crosses the level),
    found without tracing: the fit needs the points, not their order, and tracing cost more than all the
    rest of measuring a flip. Holes are filled first (their own outlines are not the skull's).
    """
    if not component.any():
        return np.zeros(0), np.zeros(0)
    # Holes filled: everything but the background reached from the border (8-connected, as marching squares'
    # low side), which the component never touches.
    background = (~component).astype(np.uint8)
    cv2.floodFill(background, None, (0, 0), 2, flags=8)
    solid = background != 2
    rows, cols = [], []
    for axis in (0, 1):
        a = solid[:-1, :] if axis == 0 else solid[:, :-1]
        b = solid[1:, :] if axis == 0 else solid[:, 1:]
        r, c = np.nonzero(a != b)
        v0 = field[r, c]
        v1 = field[r + 1, c] if axis == 0 else field[r, c + 1]
        t = (level - v0) / (v1 - v0)
        rows.append(r + t if axis == 0 else r.astype(float))
        cols.append(c.astype(float) if axis == 0 else c + t)
    return np.concatenate(rows), np.concatenate(cols)


def _bounds(mask: np.ndarray, margin: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Rows [r0, r1) and columns [c0, c1) holding ``mask``'s True pixels, widened by ``margin``, clipped."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, shape[0]),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, shape[1]))


def measure_head(prob: np.ndarray, spacing_mm_x: float, spacing_mm_y: float) -> Biometry:
    """Fit the outer skull ellipse to a probability map at image resolution and measure it in millimetres.

    The fit is done in millimetre coordinates, so anisotropic pixels are handled exactly.

    Args:
        prob: (rows, cols) probability that a pixel lies inside the skull, at image resolution.
        spacing_mm_x: column spacing (mm per pixel); spacing_mm_y: row spacing.
    Raises:
        MeasurementError: no head, or no ellipse fits it.
    """
    xy_px, mask = boundary_points(prob)
    return _biometry(xy_px, prob, mask, prob.shape, (1.0, 1.0), spacing_mm_x, spacing_mm_y)


def measure_head_on_grid(logits: np.ndarray, spacing_mm_x: float, spacing_mm_y: float,
                         image_shape: tuple[int, int]) -> Biometry:
    """``measure_head`` from the network's logits at its own resolution, for an image of ``image_shape``.

    The logits (rows, cols) sample the image on a coarser grid (pixel centres aligned as by bilinear
    resizing without corner alignment). The contour of the logits' zero level is traced on that grid
    (its points lie on the zero set of the bilinearly interpolated logits, the same boundary as
    upsampling to full size first) and mapped to the image's pixels, so nothing is upsampled.
    Confidence and the fit's agreement (IoU) are measured on the grid.
    """
    xy_grid, mask = boundary_points(logits, 0.0)
    prob = np.zeros_like(logits)  # the probability where the confidence is read: inside the component
    prob[mask] = 1.0 / (1.0 + np.exp(-np.clip(logits[mask], -60.0, 60.0)))
    scale = _grid_scale(logits.shape, image_shape)
    return _biometry(_to_image(xy_grid, scale), prob, mask, image_shape, scale, spacing_mm_x, spacing_mm_y)


def hc_on_grid(logits: np.ndarray, spacing_mm_x: float, spacing_mm_y: float, image_shape: tuple[int, int]) -> float:
    """The HC (mm) ``measure_head_on_grid`` would give, without its quality score and flags (a flip's agreement)."""
    xy_grid, _ = boundary_points(logits, 0.0)
    xy_px = _to_image(xy_grid, _grid_scale(logits.shape, image_shape))
    return fit_ellipse_robust(xy_px * np.array([spacing_mm_x, spacing_mm_y]))[0].perimeter


def _grid_scale(grid_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> tuple[float, float]:
    """Image pixels per grid sample, (x, y)."""
    return image_shape[1] / grid_shape[1], image_shape[0] / grid_shape[0]


def _to_image(xy_grid: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Grid (x, y) points in image pixels (sample centres aligned as by resizing without corner alignment)."""
    return (xy_grid + 0.5) * np.array(scale) - 0.5


def _biometry(xy_px: np.ndarray, prob: np.ndarray, mask: np.ndarray, image_shape: tuple[int, ...],
              scale: tuple[float, float], spacing_mm_x: float, spacing_mm_y: float) -> Biometry:
    """Fit, measure, score and flag. ``prob``/``mask`` sample the image every ``scale`` (x, y) pixels."""
    xy_mm = xy_px * np.array([spacing_mm_x, spacing_mm_y])
    ellipse_mm, inliers = fit_ellipse_robust(xy_mm)
    ellipse_px = ellipse_mm.scaled(1 / spacing_mm_x, 1 / spacing_mm_y)
    confidence = float(prob[mask].mean()) if mask.any() else 0.0
    # Agreement of the segmented area with the fitted ellipse (IoU), on the map's own grid.
    on_grid = ellipse_px if scale == (1.0, 1.0) else _to_grid(ellipse_px, scale)
    return head_biometry(ellipse_mm, ellipse_px, confidence, _iou(on_grid, mask), inliers, image_shape)


def head_biometry(ellipse_mm: Ellipse, ellipse_px: Ellipse, confidence: float, iou: float, inliers: float,
                  image_shape: tuple[int, ...]) -> Biometry:
    """The Biometry of a fitted head: quality (confidence x IoU) and flags (``_biometry``'s, and the batched
    path's in ``models.segmentation.device``)."""
    hc = ellipse_mm.perimeter
    quality = round(confidence * iou, 4)
    flags: list[str] = []
    if quality < LOW_CONFIDENCE:
        flags.append("low_confidence")
    if inliers < MIN_INLIERS:
        flags.append("irregular_boundary")
    if visible_fraction(ellipse_px, image_shape) < MIN_VISIBLE_OUTLINE:
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


def _to_grid(e: Ellipse, scale: tuple[float, float]) -> Ellipse:
    """An ellipse in image pixels on a grid sampling the image every ``scale`` (x, y) pixels."""
    g = e.scaled(1 / scale[0], 1 / scale[1])
    return Ellipse(g.cx + 0.5 / scale[0] - 0.5, g.cy + 0.5 / scale[1] - 0.5, g.a, g.b, g.angle)


def _iou(e: Ellipse, mask: np.ndarray) -> float:
    """Intersection over union of the ellipse (pixel centres inside it) and ``mask``, computed in their bounding box."""
    reach = e.a + 2
    mr0, mr1, mc0, mc1 = _bounds(mask, 0, mask.shape)
    r0 = max(int(min(e.cy - reach, mr0)), 0)
    r1 = min(int(max(e.cy + reach, mr1)) + 1, mask.shape[0])
    c0 = max(int(min(e.cx - reach, mc0)), 0)
    c1 = min(int(max(e.cx + reach, mc1)) + 1, mask.shape[1])
    if r1 <= r0 or c1 <= c0:
        return 0.0
    shifted = Ellipse(e.cx - c0, e.cy - r0, e.a, e.b, e.angle)
    fitted = shifted.filled_mask((r1 - r0, c1 - c0))
    sub = mask[r0:r1, c0:c1]
    union = int(np.logical_or(fitted, sub).sum()) + int(mask.sum()) - int(sub.sum())
    return float(np.logical_and(fitted, sub).sum() / union) if union else 0.0


def visible_fraction(e: Ellipse, shape: tuple[int, ...]) -> float:
    """Fraction of the ellipse's outline (pixel frame) that lies inside an image of ``shape``."""
    pts = e.points(720)
    inside = (pts[:, 0] >= -0.5) & (pts[:, 1] >= -0.5) & (pts[:, 0] <= shape[1] - 0.5) & (pts[:, 1] <= shape[0] - 0.5)
    return float(inside.mean())
