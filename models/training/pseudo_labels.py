"""Pseudo-labels: an unlabelled HC18-layout folder measured by a model, written as a labelled one.

Self-training adds images the annotators never saw (HC18's unlabelled ``test_set``) with the
model's own ellipses as labels. Only confident measurements become labels: measured, no
``needs_review`` flag, quality at least ``min_quality``. The folder written here is used with
``fetalhc train --extra-data`` (training side only; the validation split is untouched).

    python -m models.training.pseudo_labels --data ../shared/hc18/test_set --out runs/pseudo --factor 2 --jpeg 92
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.geometry.biometry import Biometry
from models.training.hc18 import load_cases
from models.training.hc18_shrink import shrink_case, write_training_csv

log = logging.getLogger(__name__)
MIN_QUALITY = 0.8
BATCH = 8


def write_pseudo_labels(data: Path, out: Path, weights: Path | None = None, factor: float = 1.0,
                        jpeg_quality: int | None = None, min_quality: float = MIN_QUALITY) -> tuple[int, int]:
    """Measure every image of ``data`` and write the confident ones under ``out``; returns (kept, seen)."""
    from models.segmentation.segment import measure_images
    from models.segmentation.weights import load_weights

    model = load_weights(weights)
    cases = load_cases(data, labelled_only=False)
    out_dir = out / "training_set"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, len(cases), BATCH):
        chunk = cases[start : start + BATCH]
        images = [c.load_image() for c in chunk]
        outcomes = measure_images(model.net, images, [(c.pixel_size_mm, c.pixel_size_mm) for c in chunk],
                                  model.input_size)
        for case, outcome in zip(chunk, outcomes):
            if isinstance(outcome, Biometry) and not outcome.needs_review and outcome.quality >= min_quality:
                rows.append(shrink_case(case, out_dir, factor, jpeg_quality, outcome.ellipse_px, outcome.hc_mm))
        log.info("%d/%d images, %d kept", start + len(chunk), len(cases), len(rows))
    write_training_csv(out, rows)
    return len(rows), len(cases)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m models.training.pseudo_labels --data DIR --out DIR [--weights W] [--factor F]``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m models.training.pseudo_labels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="unlabelled HC18-layout folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.add_argument("--factor", type=float, default=1.0, help="downscaling factor of the copy (2: half size)")
    p.add_argument("--jpeg", type=int, default=None, metavar="QUALITY", help="write images as JPEG")
    p.add_argument("--min-quality", type=float, default=MIN_QUALITY)
    args = p.parse_args(argv)
    kept, seen = write_pseudo_labels(args.data, args.out, args.weights, args.factor, args.jpeg, args.min_quality)
    print(f"{kept} of {seen} images kept as pseudo-labels in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
