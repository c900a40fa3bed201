"""``EvalReport``: everything one evaluation produced, as JSON (``to_dict``) or a readable table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.evaluation.metrics import BlandAltman
from models.evaluation.per_image import ImageResult
from models.evaluation.summary import SILENT_MISS_MM, GroupMetrics


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
    backend: str = "torch"
    precision: str = "f32"

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
            "device": self.device, "backend": self.backend, "precision": self.precision,
            "n_images": len(self.images),
            "overall": asdict(self.overall), "by_band": {k: asdict(v) for k, v in self.by_band.items()},
            "bland_altman": asdict(self.bland_altman) if self.bland_altman else None,
            "acceptance": {"silent_misses_over_10mm": self.overall.silent_misses, "passed": self.accepted},
            "submission_fallbacks": self.submission_fallbacks,
            "seconds": round(self.seconds, 2),
            "seconds_per_image": round(self.seconds / max(len(self.images), 1), 4),
            "outputs": {k: str(v) for k, v in self.outputs.items()},
        })


def format_report(report: EvalReport) -> str:
    """A readable table of the metrics, overall and by HC band."""
    head = (f"{report.model_name} {report.model_version[:12]} on {report.device} ({report.backend} {report.precision}): "
            f"{len(report.images)} images "
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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else (f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}")
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value
