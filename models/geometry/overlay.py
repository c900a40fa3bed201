"""One overlay PNG: a grey image with its fitted skull ellipse (and a reference one), for the API and the reports.

Drawn with matplotlib's object API and the Agg canvas (imported on first use): no pyplot, no global backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from models.geometry.ellipse import Ellipse

PRED_COLOUR = "#ff4d2e"  # predicted ellipse
REF_COLOUR = "#2ee6ff"  # reference ellipse


def figure(width_in: float, height_in: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig


def draw_overlay(ax: Any, image: np.ndarray, pred_px: Ellipse | None, ref_px: Ellipse | None,
                 caption: str, fontsize: float = 9) -> None:
    """Draw ``image`` on ``ax`` with the predicted (solid) and reference (dashed) ellipses, either may be None."""
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
    fig = figure(width, width * rows / cols + 0.5)
    draw_overlay(fig.add_subplot(1, 1, 1), image, pred_ellipse_px, ref_ellipse_px, caption)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
