"""Pictures: the Bland-Altman plot and the worst-case gallery (the one-image overlay: ``models.geometry.overlay``).

Drawn with matplotlib's object API and the Agg canvas: no pyplot, no global backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from models.evaluation.metrics import BlandAltman, bland_altman
from models.evaluation.per_image import ImageResult
from models.geometry.overlay import PRED_COLOUR, REF_COLOUR, draw_overlay, figure, overlay_png

__all__ = ["PRED_COLOUR", "REF_COLOUR", "caption_of", "overlay_png", "plot_bland_altman", "plot_gallery",
           "worst_cases"]


def plot_bland_altman(pred_mm: Sequence[float], ref_mm: Sequence[float], path: Path,
                      flagged: Sequence[bool] | None = None, title: str = "") -> BlandAltman:
    """Bland-Altman plot: mean of the two HCs against their difference, bias and 95% limits lines."""
    stats = bland_altman(pred_mm, ref_mm)
    pred, ref = np.asarray(pred_mm, dtype=float), np.asarray(ref_mm, dtype=float)
    mean, diff = (pred + ref) / 2, pred - ref
    flag = np.asarray(flagged, dtype=bool) if flagged is not None else np.zeros(diff.shape, dtype=bool)
    fig = figure(7.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(mean[~flag], diff[~flag], s=14, alpha=0.7, color="#1f77b4", label="measured")
    if flag.any():
        ax.scatter(mean[flag], diff[flag], s=22, marker="x", color="#d62728", label="needs review")
    for y, style, text in ((stats.bias_mm, "-", f"bias {stats.bias_mm:+.2f} mm"),
                           (stats.upper_mm, "--", f"+1.96 SD {stats.upper_mm:+.2f} mm"),
                           (stats.lower_mm, "--", f"-1.96 SD {stats.lower_mm:+.2f} mm")):
        ax.axhline(y, linestyle=style, color="#444444", linewidth=1)
        ax.annotate(text, xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", fontsize=8)
    ax.axhline(0, color="#bbbbbb", linewidth=0.8, zorder=0)
    ax.set(xlabel="mean of predicted and reference HC (mm)", ylabel="predicted - reference HC (mm)",
           title=title or f"Bland-Altman, n = {stats.n}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return stats


def worst_cases(results: Sequence[ImageResult], n: int) -> list[ImageResult]:
    """Failures first, then the largest |HC error|; at most ``n``."""
    failed = sorted((r for r in results if r.failed), key=lambda r: r.name)
    scored = sorted((r for r in results if r.error_mm is not None), key=lambda r: -abs(r.error_mm))
    return (failed + scored)[:n]


def caption_of(r: ImageResult) -> str:
    """Short two-line caption: name and status, then HCs, error, Dice, HD and flags."""
    head = f"{r.name} ({r.status}{': ' + r.reason if r.reason else ''})"
    parts = []
    if r.ref_hc_mm is not None:
        parts.append(f"ref {r.ref_hc_mm:.1f}")
    if r.pred_hc_mm is not None:
        parts.append(f"pred {r.pred_hc_mm:.1f}")
    if r.error_mm is not None:
        parts.append(f"err {r.error_mm:+.1f} mm")
    if r.dice is not None:
        parts.append(f"DSC {r.dice:.3f}")
    if r.hausdorff_mm is not None:
        parts.append(f"HD {r.hausdorff_mm:.1f} mm")
    tail = ", ".join(parts) + (f"\n[{', '.join(r.flags)}]" if r.flags else "")
    return f"{head}\n{tail}"


def plot_gallery(results: Sequence[ImageResult], path: Path, n: int = 12, columns: int = 4) -> list[str]:
    """A grid of the worst ``n`` cases (see ``worst_cases``); returns the names drawn."""
    chosen = worst_cases(results, n)
    if not chosen:
        return []
    columns = min(columns, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig = figure(4.2 * columns, 3.4 * rows)
    for i, r in enumerate(chosen):
        image = np.asarray(Image.open(r.image_path).convert("L"))
        draw_overlay(fig.add_subplot(rows, columns, i + 1), image, r.pred_ellipse_px, r.ref_ellipse_px,
                      caption_of(r), fontsize=7.5)
    fig.suptitle(f"worst {len(chosen)} cases: predicted (solid) vs reference (dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, format="png", dpi=80)
    return [r.name for r in chosen]
