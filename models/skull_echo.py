"""Skull-echo evidence along a fitted ellipse: is there a closed, bright ring around a darker brain?

A head biometry plane shows the skull as a thick bright echo all round the brain (broken only where
the beam runs along it) and a midline echo along the long axis. An abdomen, a thorax or a femur that
the segmentation network mistook for a head has an outline of soft tissue, a few rib arcs or no
outline at all. The image is sampled on radial profiles across the ellipse (elliptic radius rho = 1
on the fitted outer skull border) and summarised in ``FEATURES``; without an ellipse every feature
is 0 and ``has_ellipse`` says so.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

from models.ellipse import Ellipse

N_ANGLES = 96
RHO = np.linspace(0.4, 1.4, 41)  # radial samples, 0.025 apart
RING = (RHO >= 0.78) & (RHO <= 1.04)  # the skull: just inside the outer border
INNER = (RHO >= 0.4) & (RHO <= 0.7)  # brain
OUTER = (RHO >= 1.1) & (RHO <= 1.4)  # around the head
BRIGHT_STEP = 0.12  # a ring sample this much (of the image's bright range) above both sides is skull

FEATURES = (
    "has_ellipse", "ring_level", "ring_minus_inner", "ring_minus_outer", "bright_fraction",
    "longest_bright_run", "ring_position_spread", "ring_sharpness", "inner_level", "midline",
    "aspect", "size", "visible",
)


def _profiles(image: np.ndarray, e: Ellipse) -> tuple[np.ndarray, np.ndarray]:
    """(N_ANGLES, len(RHO)) intensities on radial lines, and which samples fall inside the image."""
    t = np.linspace(0, 2 * math.pi, N_ANGLES, endpoint=False)[:, None]
    c, s = math.cos(e.angle), math.sin(e.angle)
    u, v = RHO[None, :] * e.a * np.cos(t), RHO[None, :] * e.b * np.sin(t)
    xs, ys = e.cx + u * c - v * s, e.cy + u * s + v * c
    inside = (xs >= 0) & (ys >= 0) & (xs <= image.shape[1] - 1) & (ys <= image.shape[0] - 1)
    values = ndimage.map_coordinates(image, [ys, xs], order=1, mode="nearest")
    return values, inside


def _scale(image: np.ndarray) -> tuple[float, float]:
    """The image's dark and bright reference levels (percentiles of the non-black pixels)."""
    sample = image[::4, ::4]
    lit = sample[sample > 4]
    if lit.size < 16:
        lit = sample.ravel()
    lo, hi = np.percentile(lit, [10, 99.5])
    return float(lo), float(max(hi - lo, 1.0))


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest circular run of True."""
    if flags.all():
        return len(flags)
    doubled = np.concatenate([flags, flags])
    best = run = 0
    for f in doubled:
        run = run + 1 if f else 0
        best = max(best, run)
    return min(best, len(flags))


def skull_features(image: np.ndarray, e: Ellipse | None) -> np.ndarray:
    """The ``FEATURES`` vector (float32) of a 2-D grey image and the ellipse fitted on it (pixels)."""
    out = np.zeros(len(FEATURES), np.float32)
    if e is None or e.b < 4:
        return out
    img = image.astype(np.float32)
    # Smooth at a scale that follows the head, so speckle does not count as skull.
    smooth = ndimage.gaussian_filter(img, sigma=max(1.0, e.b / 50))
    lo, span = _scale(smooth)
    prof, inside = _profiles(smooth, e)
    prof = (prof - lo) / span
    prof = np.where(inside, prof, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rays wholly outside the image are NaN: expected
        ring = np.nanmax(np.where(RING[None, :], prof, np.nan), axis=1)
        inner = np.nanpercentile(np.where(INNER[None, :], prof, np.nan), 75, axis=1)
        outer = np.nanmedian(np.where(OUTER[None, :], prof, np.nan), axis=1)
        where = np.nanargmax(np.where(RING[None, :], np.nan_to_num(prof, nan=-9), -9), axis=1)
    seen = np.isfinite(ring)
    if seen.sum() < N_ANGLES // 4:
        return out
    outer_f = np.where(np.isfinite(outer), outer, inner)
    bright = seen & (ring > inner + BRIGHT_STEP) & (ring > outer_f + BRIGHT_STEP) & (ring > 0.3)
    # Sharpness: the ring's peak against the mean of its own band (a thin bright echo, not a glow).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        band_mean = np.nanmean(np.where(RING[None, :], prof, np.nan), axis=1)
    midline = _midline(smooth, e, lo, span)
    out[:] = [
        1.0,
        np.nanmedian(ring),
        np.nanmedian(ring - inner),
        np.nanmedian(ring - outer_f),
        bright[seen].mean(),
        _longest_run(bright) / N_ANGLES,
        float(np.std(RHO[where[seen]])),
        np.nanmedian(ring - band_mean),
        np.nanmedian(inner),
        midline,
        e.b / e.a,
        e.a / math.hypot(*image.shape),
        seen.mean(),
    ]
    return np.nan_to_num(out, nan=0.0)


def _midline(smooth: np.ndarray, e: Ellipse, lo: float, span: float) -> float:
    """Brightness of the line along the long axis inside the head against lines beside it."""
    c, s = math.cos(e.angle), math.sin(e.angle)
    t = np.linspace(-0.6, 0.6, 49)

    def line(offset: float) -> float:
        u, v = t * e.a, np.full_like(t, offset * e.b)
        xs, ys = e.cx + u * c - v * s, e.cy + u * s + v * c
        return float(np.mean(ndimage.map_coordinates(smooth, [ys, xs], order=1, mode="nearest")))

    return (line(0.0) - 0.5 * (line(0.25) + line(-0.25))) / span
