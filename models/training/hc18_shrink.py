"""A smaller copy of an HC18 folder for training elsewhere (a lent GPU takes 64 MiB of files).

Images are downscaled by ``factor`` (area averaging; PNG, or JPEG to fit more pixels in the same
bytes), annotation outlines are redrawn
from the reference ellipse fitted at full resolution and scaled, and pixel sizes are multiplied
by the factor, so HC in mm stays what the CSV says. The subject split of the copy is the same as
the original's: the same files, the same names.

    python -m models.training.hc18_shrink --data ../shared/hc18 --out runs/hc18_half --factor 2
    python -m models.training.hc18_shrink --data ../shared/hc18 --out runs/hc18_jpeg --factor 1.5 --jpeg 92
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from models.geometry.ellipse import Ellipse
from models.training.hc18 import TRAINING_CSV, Case, load_cases


def outline_mask(ellipse: Ellipse, shape: tuple[int, int], samples: int = 4000) -> np.ndarray:
    """A one-pixel outline (uint8 0/255) of ``ellipse`` sampled densely, clipped to ``shape``."""
    t = np.linspace(0, 2 * np.pi, samples, endpoint=False)
    ca, sa = np.cos(ellipse.angle), np.sin(ellipse.angle)
    x = ellipse.cx + ellipse.a * np.cos(t) * ca - ellipse.b * np.sin(t) * sa
    y = ellipse.cy + ellipse.a * np.cos(t) * sa + ellipse.b * np.sin(t) * ca
    cols, rows = np.rint(x).astype(int), np.rint(y).astype(int)
    keep = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    out = np.zeros(shape, np.uint8)
    out[rows[keep], cols[keep]] = 255
    return out


def shrink_case(case: Case, out_dir: Path, factor: float, jpeg_quality: int | None = None,
                ellipse: Ellipse | None = None, hc_mm: float | None = None) -> tuple[str, float, float]:
    """Write one downscaled image and outline; returns its CSV row (name, pixel size, HC).

    The outline is the case's reference ellipse, or ``ellipse`` (full-resolution pixels) with
    ``hc_mm`` for an unlabelled case (pseudo-labels).

    The scale is exact per axis (``size / original size``); HC18 pixels are square, so the pixel
    size is scaled by the mean of the two (they differ by under 0.2% after rounding).
    """
    image = Image.open(case.image_path).convert("L")
    size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    sx, sy = size[0] / image.width, size[1] / image.height
    name = case.name if jpeg_quality is None else Path(case.name).with_suffix(".jpg").name
    small = image.resize(size, Image.Resampling.BOX)
    if jpeg_quality is None:
        small.save(out_dir / name, optimize=True)
    else:
        small.save(out_dir / name, quality=jpeg_quality)
    e = ellipse if ellipse is not None else case.reference_ellipse_px()
    # Pixel centres: full-resolution coordinate x maps to (x + 0.5) * s - 0.5.
    scaled = Ellipse((e.cx + 0.5) * sx - 0.5, (e.cy + 0.5) * sy - 0.5, e.a * (sx + sy) / 2, e.b * (sx + sy) / 2,
                     e.angle)
    annotation = out_dir / (Path(name).stem + "_Annotation.png")
    Image.fromarray(outline_mask(scaled, (size[1], size[0]))).save(annotation)
    hc = hc_mm if hc_mm is not None else case.hc_mm
    return name, case.pixel_size_mm * 2 / (sx + sy), float(hc or 0.0)


def shrink(data: Path, out: Path, factor: float = 2, jpeg_quality: int | None = None) -> int:
    """Write the smaller copy of every labelled case of ``data`` under ``out``; returns the count."""
    out_dir = out / "training_set"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [shrink_case(case, out_dir, factor, jpeg_quality) for case in load_cases(data)]
    write_training_csv(out, rows)
    return len(rows)


def write_training_csv(out: Path, rows: list[tuple[str, float, float]]) -> None:
    """The HC18 training CSV (file name, pixel size, HC) of a folder written here."""
    with open(out / TRAINING_CSV, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "pixel size(mm)", "head circumference (mm)"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m models.training.hc18_shrink --data DIR --out DIR [--factor N]``."""
    p = argparse.ArgumentParser(prog="python -m models.training.hc18_shrink", description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--factor", type=float, default=2.0, help="downscaling factor (2: half size)")
    p.add_argument("--jpeg", type=int, default=None, metavar="QUALITY", help="write images as JPEG")
    args = p.parse_args(argv)
    print(f"{shrink(args.data, args.out, args.factor, args.jpeg)} cases written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
