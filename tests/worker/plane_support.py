"""Test plane classifiers with fixed answers (in place of SonoNet-16, whose file tests cannot rely on), and scans
of three shapes that, with ``ShapeGate``, give each of the plane decision's three outcomes."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from models.plane.sononet import CLASSES, PlaneClass, PlaneProbabilities
from tests.worker.gate_support import HEAD_SHAPE, OTHER_SCORE, OTHER_SHAPE, ShapeGate

SHARED = Path(os.environ.get("FETALHC_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
SONONET = SHARED / "sononet" / "SonoNet16.npz"
EXAMPLES = SHARED / "fetal-planes-examples"

ABDOMEN_SHAPE = (220, 320)  # a round section the gate half believes (0.60) and the classifier calls abdominal
ABDOMEN_SCORE = 0.60


def answer(label: PlaneClass, p: float = 0.95) -> PlaneProbabilities:
    """The classifier's 14 probabilities: ``label`` at ``p``, the rest spread evenly."""
    rest = (1 - p) / (len(CLASSES) - 1)
    return PlaneProbabilities(tuple(p if c is label else rest for c in CLASSES))


class ShapeClassifier:
    """Answers by image shape (``answers[(rows, cols)]``, else ``default``); counts the images it saw."""

    def __init__(self, answers: dict[tuple[int, int], PlaneProbabilities] | None = None,
                 default: PlaneProbabilities | None = None) -> None:
        self.answers = answers if answers is not None else {
            HEAD_SHAPE: answer(PlaneClass.BRAIN_TV, 0.97), ABDOMEN_SHAPE: answer(PlaneClass.ABDOMINAL, 0.91),
            OTHER_SHAPE: answer(PlaneClass.FEMUR, 0.88)}
        self.default = default or answer(PlaneClass.BACKGROUND, 0.8)
        self.seen = 0

    def classify(self, images: Sequence[np.ndarray]) -> list[PlaneProbabilities]:
        self.seen += len(images)
        return [self.answers.get(img.shape[:2], self.default) for img in images]


def three_way_gate() -> ShapeGate:
    """The gate of these tests: a head (0.93), the abdomen in its review band (0.60), the other refused (0.031)."""
    return ShapeGate({OTHER_SHAPE: OTHER_SCORE, ABDOMEN_SHAPE: ABDOMEN_SCORE})


def use_classifier(monkeypatch: pytest.MonkeyPatch, classifier: object | None) -> None:
    """Make ``load_context`` (CLI, tasks, API in this process) use ``classifier``."""
    import worker.measure.pipeline

    make: Callable[..., object | None] = lambda settings, device="cpu": classifier  # noqa: E731
    monkeypatch.setattr(worker.measure.pipeline, "classifier_for", make)


def abdomen_scan(path: Path, seed: int = 0, patient_id: str = "P-ABDOMEN") -> Path:
    """A round section of 150 mm (within the sizes SonoNet-16 knows) that ``three_way_gate`` scores 0.60."""
    phantom = make_phantom(shape=ABDOMEN_SHAPE, hc_mm=150.0, spacing_mm=0.25, seed=seed)
    ident = ScanIdentity(patient_id=patient_id, study_date=dt.date(2026, 5, 2))
    return write_us_image(path, phantom.image, 0.25, identity=ident)


def example_scan(name: str, folder: Path) -> Path:
    """One of SonoNet-16's example screens (``sononet_<name>.png``) as a US image of 0.22 mm pixels, grey as the
    authors made it (the mean of R, G and B)."""
    from PIL import Image

    rgb = np.asarray(Image.open(EXAMPLES / f"sononet_{name}.png").convert("RGB")).astype(np.float32)
    ident = ScanIdentity(patient_id=f"P-{name}", study_date=dt.date(2026, 5, 3))
    return write_us_image(folder / f"{name}.dcm", rgb.mean(axis=2).astype(np.uint8), 0.22, identity=ident)
