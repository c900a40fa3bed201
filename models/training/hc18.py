"""The HC18 challenge layout: cases, subjects, subject-level splits and reference ellipses.

van den Heuvel et al., PLoS ONE 13(8): e0200412, 2018; data CC BY 4.0 (Zenodo 1322000).
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.geometry.ellipse import Ellipse, fit_ellipse

_SUBJECT = re.compile(r"^(\d+)_(\d*)HC")


@dataclass(frozen=True)
class Case:
    """One HC18 image: its file, pixel size (mm, isotropic) and reference HC (mm, None if unlabelled)."""

    image_path: Path
    pixel_size_mm: float
    hc_mm: float | None

    @property
    def name(self) -> str:
        """File name, e.g. ``012_2HC.png``."""
        return self.image_path.name

    @property
    def subject(self) -> str:
        """Subject id: the number before ``_HC``/``_2HC`` (several images can share it)."""
        return subject_of(self.name)

    @property
    def annotation_path(self) -> Path:
        """The ellipse-outline annotation beside the image."""
        return self.image_path.with_name(self.image_path.stem + "_Annotation.png")

    def load_image(self) -> np.ndarray:
        """Grey uint8 pixels (rows, cols)."""
        return np.asarray(Image.open(self.image_path).convert("L"))

    def reference_ellipse_px(self) -> Ellipse:
        """Direct least-squares ellipse through the annotation outline, in pixels.

        Its Ramanujan perimeter times the pixel size reproduces the CSV's HC within 0.07 mm.
        """
        outline = np.asarray(Image.open(self.annotation_path).convert("L")) > 127
        rows, cols = np.nonzero(outline)
        return fit_ellipse(np.stack([cols, rows], axis=1).astype(float))


def subject_of(filename: str) -> str:
    """``012_2HC.png`` -> ``012``; raises ValueError for names outside the HC18 pattern."""
    match = _SUBJECT.match(Path(filename).name)
    if not match:
        raise ValueError(f"{filename!r} is not an HC18 file name (NNN_HC.png or NNN_2HC.png)")
    return match.group(1)


TRAINING_CSV = "training_set_pixel_size_and_HC.csv"
TEST_CSV = "test_set_pixel_size.csv"


def find_csv(folder: Path) -> Path:
    """The pixel-size CSV of an HC18 folder (in the folder itself or its parent).

    HC18's two sets reuse file names (``000_HC.png`` is in both), so the CSV must be the one of
    the folder's own set: ``test_set`` takes ``test_set_pixel_size.csv`` and never the training
    CSV beside it, ``training_set`` the reverse; another folder takes whichever it holds.
    """
    folder = Path(folder)
    wanted = {"test_set": [TEST_CSV], "training_set": [TRAINING_CSV]}.get(folder.name, [TRAINING_CSV, TEST_CSV])
    for base in (folder, folder.parent):
        for name in [*wanted, "pixel_size.csv"]:
            if (base / name).is_file():
                return base / name
        if base == folder:  # a CSV of another name inside the folder itself is its own
            hits = sorted(base.glob("*pixel_size*.csv"))
            if hits:
                return hits[0]
    raise FileNotFoundError(f"no HC18 pixel-size CSV for {folder} (looked for {' or '.join(wanted)} in it "
                            "and its parent)")


def image_folder(root: Path) -> Path:
    """``root/training_set`` when it exists, else ``root`` itself."""
    root = Path(root)
    return root / "training_set" if (root / "training_set").is_dir() else root


def load_cases(root: Path, labelled_only: bool = True) -> list[Case]:
    """All cases of an HC18 folder whose image exists (and annotation, when ``labelled_only``)."""
    folder = image_folder(root)
    cases = []
    with open(find_csv(folder), newline="") as fh:
        for row in csv.DictReader(fh):
            name = row["filename"]
            path = folder / name
            hc = row.get("head circumference (mm)")
            case = Case(path, float(row["pixel size(mm)"]), float(hc) if hc else None)
            if not path.is_file():
                continue
            if labelled_only and (case.hc_mm is None or not case.annotation_path.is_file()):
                continue
            cases.append(case)
    if not cases:
        raise FileNotFoundError(f"no HC18 images found under {root}")
    return cases


def split_by_subject(cases: list[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Train/validation split with every image of a subject on one side; fixed by ``seed``."""
    subjects = sorted({c.subject for c in cases})
    random.Random(seed).shuffle(subjects)
    n_val = max(1, round(len(subjects) * val_fraction))
    val_subjects = set(subjects[:n_val])
    train = [c for c in cases if c.subject not in val_subjects]
    val = [c for c in cases if c.subject in val_subjects]
    return train, val
