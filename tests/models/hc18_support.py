"""Tiny HC18-layout folders of phantom images for tests (the real HC18 data is never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dicom_io.phantom import make_phantom
from models.geometry.ellipse import Ellipse

SPACING_MM = 0.15


def write_hc18_folder(folder: Path, phantoms: tuple[tuple[str, float, int], ...], labelled: bool = True) -> dict:
    """A tiny HC18-layout folder of phantom images; annotations are 2-px outlines of the true ellipse."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    rows = []
    for name, hc, seed in phantoms:
        ph = make_phantom(hc_mm=hc, spacing_mm=SPACING_MM, angle=0.2 * seed, seed=seed)
        Image.fromarray(ph.image).save(folder / name)
        outer = Ellipse.make(*ph.outer)
        if labelled:
            inner = Ellipse.make(outer.cx, outer.cy, outer.a - 2, outer.b - 2, outer.angle)
            ring = outer.filled_mask(ph.image.shape) & ~inner.filled_mask(ph.image.shape)
            Image.fromarray((ring * 255).astype(np.uint8)).save(folder / name.replace(".png", "_Annotation.png"))
        truth[name] = (outer, ph.hc_mm)
        rows.append(f"{name},{SPACING_MM}" + (f",{ph.hc_mm:.2f}" if labelled else ""))
    header = "filename,pixel size(mm)" + (",head circumference (mm)" if labelled else "")
    csv_name = "training_set_pixel_size_and_HC.csv" if labelled else "pixel_size.csv"
    (folder / csv_name).write_text("\n".join([header, *rows]) + "\n")
    return truth
