"""The HC18 metrics of one image or one list: HC band, Dice, Hausdorff distance, error statistics, Bland-Altman.

References: van den Heuvel et al., PLoS ONE 2018 (HC18: ADF, DF, DSC, HD); Bland & Altman, Lancet 1986.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from models.geometry.ellipse import Ellipse

# HC bands (mm) of the reference: first trimester / mid-pregnancy / late pregnancy.
HC_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<100", 0.0, 100.0),
    ("100-250", 100.0, 250.0),
    (">250", 250.0, math.inf),
)


def hc_band(hc_mm: float) -> str:
    """Name of the HC band (``<100``, ``100-250``, ``>250`` mm) that ``hc_mm`` falls in; bounds go up."""
    for name, lo, hi in HC_BANDS:
        if lo <= hc_mm < hi:
            return name
    raise ValueError(f"HC must be a non-negative number of mm, got {hc_mm}")


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice similarity coefficient 2|A and B| / (|A| + |B|) of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def ellipse_dice(pred_px: Ellipse, ref_px: Ellipse, shape: tuple[int, int]) -> float:
    """DSC of the two filled ellipses rasterised on an image of ``shape`` (HC18's DSC)."""
    return dice(pred_px.filled_mask(shape), ref_px.filled_mask(shape))


def hausdorff_mm(pred_px: Ellipse, ref_px: Ellipse, spacing_mm: tuple[float, float], n: int = 2048) -> float:
    """Symmetric Hausdorff distance (mm) between the two ellipse outlines (HC18's HD).

    ``max(max_p min_r |p - r|, max_r min_p |r - p|)`` over ``n`` points sampled on each outline,
    scaled to mm by ``spacing_mm`` = (x, y) mm per pixel. Sampling overestimates by at most half
    the gap between samples (about 0.5 px for n = 2048 on an 800x540 image).
    """
    scale = np.array([spacing_mm[0], spacing_mm[1]], dtype=float)
    p, r = pred_px.points(n) * scale, ref_px.points(n) * scale
    d_pr = cKDTree(r).query(p)[0].max()
    d_rp = cKDTree(p).query(r)[0].max()
    return float(max(d_pr, d_rp))


@dataclass(frozen=True)
class ErrorStats:
    """HC error statistics (mm) of signed errors HC_pred - HC_ref (NaN when there are none).

    ``adf_mm``: mean |error| (the challenge's ranking metric); ``df_mm``: mean signed error;
    ``p95_abs_mm``: 95th percentile of |error| (linear interpolation).
    """

    n: int
    adf_mm: float
    df_mm: float
    median_abs_mm: float
    p95_abs_mm: float
    sd_mm: float
    max_abs_mm: float

    @classmethod
    def from_errors(cls, errors_mm: Iterable[float]) -> ErrorStats:
        """Statistics of a list of signed errors (mm)."""
        e = np.asarray(list(errors_mm), dtype=float)
        if e.size == 0:
            return cls(0, *([math.nan] * 6))
        a = np.abs(e)
        return cls(
            n=int(e.size), adf_mm=float(a.mean()), df_mm=float(e.mean()), median_abs_mm=float(np.median(a)),
            p95_abs_mm=float(np.percentile(a, 95)), sd_mm=float(e.std(ddof=1)) if e.size > 1 else math.nan,
            max_abs_mm=float(a.max()),
        )


@dataclass(frozen=True)
class BlandAltman:
    """Bland & Altman (Lancet 1986) agreement of predicted and reference HC (mm).

    ``bias_mm`` = mean(pred - ref); limits of agreement ``bias +- 1.96 sd`` of the differences.
    """

    n: int
    bias_mm: float
    sd_mm: float
    lower_mm: float
    upper_mm: float


def bland_altman(pred_mm: Sequence[float], ref_mm: Sequence[float]) -> BlandAltman:
    """Bias and 95% limits of agreement of paired measurements (needs at least two pairs)."""
    pred, ref = np.asarray(pred_mm, dtype=float), np.asarray(ref_mm, dtype=float)
    if pred.shape != ref.shape or pred.size < 2:
        raise ValueError("Bland-Altman needs at least two paired measurements")
    diff = pred - ref
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    return BlandAltman(int(diff.size), bias, sd, bias - 1.96 * sd, bias + 1.96 * sd)
