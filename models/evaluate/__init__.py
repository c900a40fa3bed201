"""Evaluation on HC18-layout folders: challenge metrics by HC band, plots, per-image rows, submission CSV.

Metrics of the HC18 literature (van den Heuvel et al., PLoS ONE 2018; REFERENCES.md): ADF (mean
|HC_pred - HC_ref|, mm), DF (signed mean, mm), DSC (Dice of the filled ellipses) and HD (Hausdorff
distance between the ellipse outlines, mm). Inference runs exactly as production measures:
``models.segment.measure_images`` in batches, with the model's input size and test-time flips.

Three layers (nnU-Net style): ``main(argv)`` parses, ``evaluate(cfg)`` is typed and callable from
Python, plain functions compute each metric and draw each picture.

Modules: ``metrics`` (HC band, Dice, HD, error statistics, Bland-Altman), ``per_image`` (one image
scored, per_image.csv), ``summary`` (metrics of a group: overall and by HC band), ``plots`` (overlay,
Bland-Altman plot, worst-case gallery), ``submission`` (the challenge CSV), ``subsets`` (split file
and ``--subset``), ``report`` (``EvalReport``, the table), ``runner`` (``evaluate``, ``main``).
"""

from __future__ import annotations

from models.evaluate.metrics import (
    HC_BANDS,
    BlandAltman,
    ErrorStats,
    bland_altman,
    dice,
    ellipse_dice,
    hausdorff_mm,
    hc_band,
)
from models.evaluate.per_image import PER_IMAGE_COLUMNS, ImageResult, score_case, write_per_image_csv
from models.evaluate.plots import (
    PRED_COLOUR,
    REF_COLOUR,
    caption_of,
    overlay_png,
    plot_bland_altman,
    plot_gallery,
    worst_cases,
)
from models.evaluate.report import EvalReport, format_report
from models.evaluate.runner import evaluate, main, run_from_args
from models.evaluate.submission import SUBMISSION_COLUMNS, submission_row, write_submission
from models.evaluate.subsets import default_subset, find_split_file, select_cases
from models.evaluate.summary import SILENT_MISS_MM, GroupMetrics, summarise, summarise_by_band
from models.evaluate_config import EvalConfig, build_parser, config_from_args

__all__ = [
    "HC_BANDS", "PER_IMAGE_COLUMNS", "PRED_COLOUR", "REF_COLOUR", "SILENT_MISS_MM", "SUBMISSION_COLUMNS",
    "BlandAltman", "ErrorStats", "EvalConfig", "EvalReport", "GroupMetrics", "ImageResult",
    "bland_altman", "build_parser", "caption_of", "config_from_args", "default_subset", "dice", "ellipse_dice",
    "evaluate", "find_split_file", "format_report", "hausdorff_mm", "hc_band", "main", "overlay_png",
    "plot_bland_altman", "plot_gallery", "run_from_args", "score_case", "select_cases", "submission_row",
    "summarise", "summarise_by_band", "worst_cases", "write_per_image_csv", "write_submission",
]
