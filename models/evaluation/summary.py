"""Metrics of a group of images (all, or one HC band): error statistics, Dice, HD, failures, flags, silent misses."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from models.evaluation.metrics import HC_BANDS, ErrorStats
from models.evaluation.per_image import ImageResult

# An error above this without a needs_review flag is a silent clinical miss (acceptance: none).
SILENT_MISS_MM = 10.0


@dataclass(frozen=True)
class GroupMetrics:
    """Metrics of one group of images (all, or one HC band).

    Error statistics, Dice and HD cover the measured images with a reference (flagged ones
    included; ``adf_unflagged_mm`` leaves them out). ``silent_misses``: off by more than 10 mm
    without a needs_review flag (acceptance criterion: 0).
    """

    n_images: int
    measured: int
    failures: int
    needs_review: int
    adf_mm: float
    df_mm: float
    median_abs_mm: float
    p95_abs_mm: float
    sd_mm: float
    max_abs_mm: float
    adf_unflagged_mm: float
    dice: float
    hausdorff_mm: float
    off_10mm: int
    silent_misses: int
    failure_reasons: dict[str, int] = field(default_factory=dict)
    flag_counts: dict[str, int] = field(default_factory=dict)


def summarise(results: Sequence[ImageResult]) -> GroupMetrics:
    """Aggregate per-image results into the challenge metrics plus failure and flag counts."""
    scored = [r for r in results if r.error_mm is not None]
    errors = [r.error_mm for r in scored]
    stats = ErrorStats.from_errors(errors)
    unflagged = ErrorStats.from_errors(r.error_mm for r in scored if not r.flags)
    off = [r for r in scored if abs(r.error_mm) > SILENT_MISS_MM]
    dices = [r.dice for r in scored if r.dice is not None]
    hds = [r.hausdorff_mm for r in scored if r.hausdorff_mm is not None]
    stat_fields = {k: v for k, v in asdict(stats).items() if k != "n"}
    return GroupMetrics(
        n_images=len(results),
        measured=sum(not r.failed for r in results),
        failures=sum(r.failed for r in results),
        needs_review=sum(r.needs_review for r in results),
        **stat_fields,
        adf_unflagged_mm=unflagged.adf_mm,
        dice=float(np.mean(dices)) if dices else math.nan,
        hausdorff_mm=float(np.mean(hds)) if hds else math.nan,
        off_10mm=len(off),
        silent_misses=sum(not r.flags for r in off),
        failure_reasons=dict(sorted(Counter(r.reason or "unknown" for r in results if r.failed).items())),
        flag_counts=dict(sorted(Counter(f for r in results for f in r.flags).items())),
    )


def summarise_by_band(results: Sequence[ImageResult]) -> dict[str, GroupMetrics]:
    """``summarise`` per HC band of the reference (images without a reference are left out)."""
    return {name: summarise([r for r in results if r.band == name]) for name, _, _ in HC_BANDS}
