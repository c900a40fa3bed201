"""Pictures: one overlay PNG, the Bland-Altman plot and the worst-case gallery.

Drawn with matplotlib's object API and the Agg canvas: no pyplot, no global backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from models.ellipse import Ellipse
from models.evaluate.metrics import BlandAltman, bland_altman
from models.evaluate.per_image import ImageResult

PRED_COLOUR = "#ff4d2e"  # predicted ellipse
REF_COLOUR = "#2ee6ff"  # reference ellipse


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def _draw_overlay(ax: Any, image: np.ndarray, pred_px: Ellipse | None, ref_px: Ellipse | None,
                  caption: str, fontsize: float = 9) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else None, interpolation="bilinear")
    for ellipse, colour, style, label in ((ref_px, REF_COLOUR, "--", "reference"), (pred_px, PRED_COLOUR, "-",
                                                                                    "predicted")):
        if ellipse is not None:
            pts = ellipse.points(720)
            pts = np.vstack([pts, pts[:1]])
            ax.plot(pts[:, 0], pts[:, 1], style, color=colour, linewidth=1.4, label=label)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_title(caption, fontsize=fontsize)
    ax.axis("off")
    if pred_px is not None or ref_px is not None:
        ax.legend(loc="lower right", fontsize=fontsize - 2, framealpha=0.6)


def overlay_png(image: np.ndarray, pred_ellipse_px: Ellipse | None, ref_ellipse_px: Ellipse | None,
                path: str | Path | BinaryIO, caption: str = "") -> None:
    """One PNG: the grey image, the predicted ellipse (solid, orange-red) and the reference (dashed, cyan).

    Args:
        image: grey pixels (rows, cols); ellipses in its pixel frame (either may be None).
        path: file path or binary file object (e.g. ``io.BytesIO`` for a web response).
        caption: one or two lines drawn above the image.
    """
    rows, cols = image.shape[:2]
    width = 8.0
    fig = _figure(width, width * rows / cols + 0.5)
    _draw_overlay(fig.add_subplot(1, 1, 1), image, pred_ellipse_px, ref_ellipse_px, caption)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def plot_bland_altman(pred_mm: Sequence[float], ref_mm: Sequence[float], path: Path,
                      flagged: Sequence[bool] | None = None, title: str = "") -> BlandAltman:
    """Bland-Altman plot: mean of the two HCs against their difference, bias and 95% limits lines."""
    stats = bland_altman(pred_mm, ref_mm)
    pred, ref = np.asarray(pred_mm, dtype=float), np.asarray(ref_mm, dtype=float)
    mean, diff = (pred + ref) / 2, pred - ref
    flag = np.asarray(flagged, dtype=bool) if flagged is not None else np.zeros(diff.shape, dtype=bool)
    fig = _figure(7.5, 5.0)
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
    fig = _figure(4.2 * columns, 3.4 * rows)
    for i, r in enumerate(chosen):
        image = np.asarray(Image.open(r.image_path).convert("L"))
        _draw_overlay(fig.add_subplot(rows, columns, i + 1), image, r.pred_ellipse_px, r.ref_ellipse_px,
                      caption_of(r), fontsize=7.5)
    fig.suptitle(f"worst {len(chosen)} cases: predicted (solid) vs reference (dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, format="png", dpi=80)
    return [r.name for r in chosen]
