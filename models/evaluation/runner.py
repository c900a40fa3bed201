"""The ``fetalhc eval`` run: ``evaluate(cfg)`` measures and scores, ``run_from_args``/``main`` parse and print.

Inference runs exactly as production measures: ``models.segmentation.segment.measure_images`` in batches, with
the model's input size and test-time flips.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from models.errors import FetalHCError
from models.evaluation.evaluate_config import EvalConfig, build_parser, config_from_args
from models.evaluation.metrics import BlandAltman
from models.evaluation.per_image import ImageResult, score_case, write_per_image_csv
from models.evaluation.plots import plot_bland_altman, plot_gallery
from models.evaluation.report import EvalReport, format_report
from models.evaluation.submission import write_submission
from models.evaluation.subsets import default_subset, find_split_file, select_cases
from models.evaluation.summary import SILENT_MISS_MM, summarise, summarise_by_band
from models.training.hc18 import load_cases

log = logging.getLogger("models.evaluation")  # one logger for the whole evaluation, as before the split


def evaluate(cfg: EvalConfig) -> EvalReport:
    """Measure the chosen images as production does and score them; writes the outputs to ``cfg.out``.

    Raises:
        FileNotFoundError: no HC18 images or CSV under ``cfg.data``.
        ValueError: a subset that selects nothing, or no split file for ``val``.
        WeightsError: weights missing or unreadable.
    """
    import torch

    from models.segmentation.backends import make_forward
    from models.segmentation.network import pick_device
    from models.segmentation.segment import measure_images
    from models.segmentation.weights import SHIPPED_WEIGHTS, load_weights

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
    forward = make_forward(model, cfg.backend, device, precision=cfg.precision)
    log.info("evaluating %s %s on %d images (%s) on %s, %s %s", model.model_name, model.model_version[:12],
             len(cases), subset, device, forward.backend.value, forward.precision.value)

    results: list[ImageResult] = []
    for start in range(0, len(cases), cfg.batch_size):
        chunk = cases[start : start + cfg.batch_size]
        images = [c.load_image() for c in chunk]
        outcomes = measure_images(forward, images, [(c.pixel_size_mm, c.pixel_size_mm) for c in chunk],
                                  model.input_size, device)
        results.extend(score_case(c, img.shape[:2], o) for c, img, o in zip(chunk, images, outcomes))
        log.info("%d/%d images", len(results), len(cases))

    overall = summarise(results)
    by_band = summarise_by_band(results)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    outputs["per_image"] = out / "per_image.csv"
    write_per_image_csv(results, outputs["per_image"])

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
        seconds=time.perf_counter() - started, backend=forward.backend.value, precision=forward.precision.value,
    )
    outputs["metrics"].write_text(json.dumps(report.to_dict(), indent=1))
    if scored and not report.accepted:
        log.warning("%d images are off by more than %.0f mm without a needs_review flag",
                    overall.silent_misses, SILENT_MISS_MM)
    return report


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
    """``python -m models.evaluation``: parse, evaluate, print."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_from_args(build_parser().parse_args(argv))
