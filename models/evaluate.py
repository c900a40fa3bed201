"""Evaluation on HC18-layout folders: challenge metrics by HC band, plots, per-image rows, submission CSV.

Metrics of the HC18 literature (van den Heuvel et al., PLoS ONE 2018; REFERENCES.md): ADF (mean
|HC_pred - HC_ref|, mm), DF (signed mean, mm), DSC (Dice of the filled ellipses) and HD (Hausdorff
distance between the ellipse outlines, mm). Inference runs exactly as production measures:
``models.segment.measure_images`` in batches, with the model's input size and test-time flips.

Three layers (nnU-Net style): ``main(argv)`` parses, ``evaluate(cfg)`` is typed and callable from
Python, plain functions compute each metric and draw each picture.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from models.biometry import Biometry
from models.ellipse import Ellipse
from models.errors import FetalHCError
from models.evaluate_config import EvalConfig, build_parser, config_from_args
from models.hc18 import Case, load_cases

log = logging.getLogger(__name__)

# HC bands (mm) of the reference: first trimester / mid-pregnancy / late pregnancy.
HC_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<100", 0.0, 100.0),
    ("100-250", 100.0, 250.0),
    (">250", 250.0, math.inf),
)
# An error above this without a needs_review flag is a silent clinical miss (acceptance: none).
SILENT_MISS_MM = 10.0
SUBMISSION_COLUMNS = ("filename", "center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")
PER_IMAGE_COLUMNS = ("name", "pixel_size_mm", "band", "ref_hc_mm", "pred_hc_mm", "error_mm", "abs_error_mm", "dice",
                     "hausdorff_mm", "quality", "flags", "status", "reason")
PRED_COLOUR = "#ff4d2e"  # predicted ellipse
REF_COLOUR = "#2ee6ff"  # reference ellipse


# -- per-image results ------------------------------------------------------------------------------------------

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


# -- metrics ----------------------------------------------------------------------------------------------------

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


# -- pictures (matplotlib's object API with the Agg canvas: no pyplot, no global backend) ----------------------

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


# -- HC18 challenge submission ----------------------------------------------------------------------------------

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


# -- the run ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalReport:
    """Everything one evaluation produced: metrics overall and by HC band, per-image results, outputs."""

    data: Path
    subset: str
    split_file: Path | None
    includes_training_images: bool
    model_name: str
    model_version: str
    weights: Path
    input_size: tuple[int, int]
    device: str
    overall: GroupMetrics
    by_band: dict[str, GroupMetrics]
    bland_altman: BlandAltman | None
    images: tuple[ImageResult, ...]
    outputs: dict[str, Path]
    submission_fallbacks: int
    seconds: float

    @property
    def accepted(self) -> bool:
        """Acceptance: no image off by more than 10 mm without a needs_review flag."""
        return self.overall.silent_misses == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metrics (non-finite numbers become null; per-image rows are in per_image.csv)."""
        return _jsonable({
            "data": str(self.data), "subset": self.subset,
            "split_file": str(self.split_file) if self.split_file else None,
            "includes_training_images": self.includes_training_images,
            "model": {"name": self.model_name, "version": self.model_version, "weights": str(self.weights),
                      "input_size": list(self.input_size)},
            "device": self.device, "n_images": len(self.images),
            "overall": asdict(self.overall), "by_band": {k: asdict(v) for k, v in self.by_band.items()},
            "bland_altman": asdict(self.bland_altman) if self.bland_altman else None,
            "acceptance": {"silent_misses_over_10mm": self.overall.silent_misses, "passed": self.accepted},
            "submission_fallbacks": self.submission_fallbacks,
            "seconds": round(self.seconds, 2),
            "seconds_per_image": round(self.seconds / max(len(self.images), 1), 4),
            "outputs": {k: str(v) for k, v in self.outputs.items()},
        })


def find_split_file(weights: Path) -> Path | None:
    """The train/val split written beside a weights file: ``<stem>.split.json``, ``<name>.split.json``
    or the training run's ``split.json`` in the same folder."""
    for candidate in (weights.with_suffix(".split.json"), weights.with_name(weights.name + ".split.json"),
                      weights.parent / "split.json"):
        if candidate.is_file():
            return candidate
    return None


def _read_names(path: Path) -> list[str]:
    if path.suffix == ".json":
        blob = json.loads(path.read_text())
        names = blob.get("val", []) if isinstance(blob, dict) else blob
    else:
        names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [Path(n).name for n in names if n]


def _split_names(split_file: Path | None) -> tuple[set[str], set[str]]:
    if split_file is None:
        return set(), set()
    split = json.loads(split_file.read_text())
    return set(split.get("train", [])), set(split.get("val", []))


def default_subset(cases: Sequence[Case], split_file: Path | None) -> str:
    """``val`` when the folder holds labelled images the training run split (train or val), else ``all``.

    A folder the model never saw (the held-back HC18 images, phantoms, another site) is held out
    as a whole; unlabelled images (the HC18 test set reuses training file names) never match.
    """
    train, val = _split_names(split_file)
    return "val" if any(c.name in train | val for c in cases if c.hc_mm is not None) else "all"


def select_cases(cases: list[Case], subset: str, split_file: Path | None) -> tuple[list[Case], bool]:
    """The cases of ``subset`` (``val``, ``all`` or a names file) and whether any was trained on."""
    trained, held_out = _split_names(split_file)
    if subset == "all":
        chosen = cases
    elif subset == "val":
        if split_file is None:
            raise ValueError("--subset val needs a split file beside the weights (<weights>.split.json or "
                             "split.json); use --subset all or --subset FILE")
        chosen = [c for c in cases if c.name in held_out]
        if len(chosen) < len(held_out):
            log.warning("%d validation images of %s are not in this folder", len(held_out) - len(chosen), split_file)
    else:
        path = Path(subset)
        if not path.is_file():
            raise ValueError(f"--subset must be val, all or a file of image names; {subset!r} is none of these")
        wanted = set(_read_names(path))
        chosen = [c for c in cases if c.name in wanted]
        if len(chosen) < len(wanted):
            log.warning("%d names of %s are not in this folder", len(wanted) - len(chosen), path)
    if not chosen:
        raise ValueError(f"subset {subset!r} selects no image of this folder")
    # Trained-on images make metrics optimistic; only labelled images can have been trained on.
    leak = any(c.name in trained and c.hc_mm is not None for c in chosen)
    return chosen, leak


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


def evaluate(cfg: EvalConfig) -> EvalReport:
    """Measure the chosen images as production does and score them; writes the outputs to ``cfg.out``.

    Raises:
        FileNotFoundError: no HC18 images or CSV under ``cfg.data``.
        ValueError: a subset that selects nothing, or no split file for ``val``.
        WeightsError: weights missing or unreadable.
    """
    import torch

    from models.network import pick_device
    from models.segment import measure_images
    from models.weights import SHIPPED_WEIGHTS, load_weights

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    weights = Path(cfg.weights) if cfg.weights else SHIPPED_WEIGHTS
    split_file = find_split_file(weights)
    cases = load_cases(cfg.data, labelled_only=cfg.submission is None)
    subset = cfg.subset or default_subset(cases, split_file)
    cases, leak = select_cases(cases, subset, split_file)
    if cfg.limit:
        cases = cases[: cfg.limit]
    if leak:
        log.warning("the subset includes images the model was trained on (%s): metrics are optimistic", split_file)
    device = pick_device(cfg.device)
    model = load_weights(weights, device)
    log.info("evaluating %s %s on %d images (%s) on %s", model.model_name, model.model_version[:12], len(cases),
             subset, device)

    results: list[ImageResult] = []
    for start in range(0, len(cases), cfg.batch_size):
        chunk = cases[start : start + cfg.batch_size]
        images = [c.load_image() for c in chunk]
        outcomes = measure_images(model.net, images, [(c.pixel_size_mm, c.pixel_size_mm) for c in chunk],
                                  model.input_size, device)
        results.extend(score_case(c, img.shape[:2], o) for c, img, o in zip(chunk, images, outcomes))
        log.info("%d/%d images", len(results), len(cases))

    overall = summarise(results)
    by_band = summarise_by_band(results)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    outputs["per_image"] = out / "per_image.csv"
    with open(outputs["per_image"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r.row() for r in results)

    scored = [r for r in results if r.error_mm is not None]
    ba: BlandAltman | None = None
    if len(scored) >= 2:
        outputs["bland_altman"] = out / "bland_altman.png"
        ba = plot_bland_altman([r.pred_hc_mm for r in scored], [r.ref_hc_mm for r in scored],
                               outputs["bland_altman"], flagged=[bool(r.flags) for r in scored],
                               title=f"{model.model_name} on {len(scored)} images ({subset}): predicted vs reference HC")
    if cfg.gallery and (scored or overall.failures):
        outputs["gallery"] = out / "gallery.png"
        plot_gallery(results, outputs["gallery"], cfg.gallery)
    fallbacks = 0
    if cfg.submission is not None:
        outputs["submission"] = Path(cfg.submission)
        fallbacks = write_submission(results, outputs["submission"])
    outputs["metrics"] = out / "metrics.json"

    report = EvalReport(
        data=Path(cfg.data), subset=subset, split_file=split_file, includes_training_images=leak,
        model_name=model.model_name, model_version=model.model_version, weights=weights,
        input_size=model.input_size, device=str(device), overall=overall, by_band=by_band, bland_altman=ba,
        images=tuple(results), outputs=outputs, submission_fallbacks=fallbacks,
        seconds=time.perf_counter() - started,
    )
    outputs["metrics"].write_text(json.dumps(report.to_dict(), indent=1))
    if scored and not report.accepted:
        log.warning("%d images are off by more than %.0f mm without a needs_review flag",
                    overall.silent_misses, SILENT_MISS_MM)
    return report


# -- output -----------------------------------------------------------------------------------------------------

def format_report(report: EvalReport) -> str:
    """A readable table of the metrics, overall and by HC band."""
    head = (f"{report.model_name} {report.model_version[:12]} on {report.device}: {len(report.images)} images "
            f"of {report.data} (subset {report.subset}) in {report.seconds:.1f} s")
    if report.includes_training_images:
        head += "\nwarning: the subset includes training images, so these metrics are optimistic"
    cols = ("HC band", "n", "failed", "review", "ADF", "DF", "median", "p95", "max", "DSC", "HD", ">10mm", "silent")
    units = ("", "", "", "", "mm", "mm", "|err| mm", "|err| mm", "|err| mm", "", "mm", "", "")
    widths = (10, 5, 6, 6, 6, 6, 8, 8, 8, 6, 6, 5, 6)

    def line(cells: Sequence[Any]) -> str:
        return " ".join(f"{_cell(c):>{w}}" for c, w in zip(cells, widths)).rstrip()

    lines = [head, "", line(cols), line(units)]
    for name, g in [("all", report.overall)] + [(f"{k} mm", v) for k, v in report.by_band.items()]:
        lines.append(line([name, g.n_images, g.failures, g.needs_review, g.adf_mm, g.df_mm, g.median_abs_mm,
                           g.p95_abs_mm, g.max_abs_mm, g.dice, g.hausdorff_mm, g.off_10mm, g.silent_misses]))
    o = report.overall
    if report.bland_altman:
        b = report.bland_altman
        lines.append(f"\nBland-Altman: bias {b.bias_mm:+.2f} mm, 95% limits of agreement "
                     f"{b.lower_mm:+.2f} to {b.upper_mm:+.2f} mm")
    if o.failure_reasons:
        lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in o.failure_reasons.items()))
    if o.flag_counts:
        lines.append("flags: " + ", ".join(f"{k} {v}" for k, v in o.flag_counts.items()))
    if o.adf_mm == o.adf_mm:  # labelled
        lines.append(f"ADF without flagged images: {_cell(o.adf_unflagged_mm)} mm; acceptance (no silent error "
                     f"> {SILENT_MISS_MM:.0f} mm): {'passed' if report.accepted else 'FAILED'}")
    lines.append("outputs: " + ", ".join(str(p) for p in report.outputs.values()))
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    """Evaluate with parsed ``fetalhc eval`` arguments and print the report (JSON or table)."""
    try:
        report = evaluate(config_from_args(args))
    except FetalHCError as exc:
        print(f"fetalhc eval: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m models.evaluate``: parse, evaluate, print."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_from_args(build_parser().parse_args(argv))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else (f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}")
    return str(value)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


if __name__ == "__main__":
    raise SystemExit(main())
