"""Evaluation (never imported by a worker): HC18 metrics and reports, the gate's evaluation, backend benchmarks.

On HC18-layout folders: challenge metrics by HC band, plots, per-image rows, submission CSV.

Metrics of the HC18 literature (van den Heuvel et al., PLoS ONE 2018; REFERENCES.md): ADF (mean
|HC_pred - HC_ref|, mm), DF (signed mean, mm), DSC (Dice of the filled ellipses) and HD (Hausdorff
distance between the ellipse outlines, mm). Inference runs exactly as production measures:
``models.segmentation.segment.measure_images`` in batches, with the model's input size and test-time flips.

Three layers (nnU-Net style): ``main(argv)`` parses, ``evaluate(cfg)`` is typed and callable from
Python, plain functions compute each metric and draw each picture.

Modules: ``metrics`` (HC band, Dice, HD, error statistics, Bland-Altman), ``per_image`` (one image
scored, per_image.csv), ``summary`` (metrics of a group: overall and by HC band), ``plots`` (Bland-Altman
plot, worst-case gallery; the one-image overlay is ``models.geometry.overlay``), ``submission`` (the
challenge CSV), ``subsets`` (split file and ``--subset``), ``report`` (``EvalReport``, the table), ``runner``
(``evaluate``, ``main``), ``evaluate_config`` (its options); ``gate_eval`` (``fetalhc eval-gate``) and
``backend_bench`` (``fetalhc bench``'s forward passes). The names below are imported on first use.
"""

from __future__ import annotations

from models import lazy_exports

_EXPORTS = {
    "evaluate_config": ("EvalConfig", "build_parser", "config_from_args"),
    "metrics": ("HC_BANDS", "BlandAltman", "ErrorStats", "bland_altman", "dice", "ellipse_dice",
                "hausdorff_mm", "hc_band"),
    "per_image": ("PER_IMAGE_COLUMNS", "ImageResult", "score_case", "write_per_image_csv"),
    "plots": ("PRED_COLOUR", "REF_COLOUR", "caption_of", "overlay_png", "plot_bland_altman", "plot_gallery",
              "worst_cases"),
    "report": ("EvalReport", "format_report"),
    "runner": ("evaluate", "main", "run_from_args"),
    "submission": ("SUBMISSION_COLUMNS", "submission_row", "write_submission"),
    "subsets": ("default_subset", "find_split_file", "select_cases"),
    "summary": ("SILENT_MISS_MM", "GroupMetrics", "summarise", "summarise_by_band"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
