"""Test head-plane gates with fixed probabilities (dependency injection in place of the trained gate)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from models.geometry.ellipse import Ellipse
from models.plane.head_plane import HeadPlaneGate, PlaneVerdict

HEAD_SHAPE = (200, 300)
OTHER_SHAPE = (210, 310)  # the "other anatomy" of these tests: the gate below refuses this shape
OTHER_SCORE = 0.031


class ShapeGate(HeadPlaneGate):
    """Probability by image shape: ``scores[(rows, cols)]``, else ``default``; records what it saw."""

    def __init__(self, scores: dict[tuple[int, int], float] | None = None, default: float = 0.93,
                 threshold: float = 0.412) -> None:
        self.scores = {OTHER_SHAPE: OTHER_SCORE} if scores is None else scores
        self.default = default
        self.threshold = threshold
        self.seen: list[tuple[tuple[int, ...], bool]] = []  # (shape, ellipse found) per image

    def verdicts(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Ellipse | None]) -> list[PlaneVerdict]:
        self.seen += [(img.shape, e is not None) for img, e in zip(images, ellipses_px)]
        return [PlaneVerdict(self.scores.get(img.shape[:2], self.default), self.threshold) for img in images]


class SequenceGate(HeadPlaneGate):
    """Probabilities handed out in the order images arrive (cine frames come in frame order)."""

    def __init__(self, probabilities: Sequence[float], threshold: float = 0.5) -> None:
        self.probabilities = list(probabilities)
        self.threshold = threshold

    def verdicts(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Ellipse | None]) -> list[PlaneVerdict]:
        out = [PlaneVerdict(self.probabilities.pop(0), self.threshold) for _ in images]
        return out


def use_gate(monkeypatch: pytest.MonkeyPatch, gate: HeadPlaneGate | None) -> None:
    """Make ``load_context`` (CLI, tasks, API in this process) use ``gate``."""
    import worker.measure.pipeline

    make: Callable[..., HeadPlaneGate | None] = lambda settings, device="cpu": gate  # noqa: E731
    monkeypatch.setattr(worker.measure.pipeline, "gate_for", make)


def head_scan(path: Path, seed: int = 0, patient_id: str = "P-HEAD") -> Path:
    """A head phantom (bright skull ring) with an LMP, so a measured row has growth facts."""
    phantom = make_phantom(shape=HEAD_SHAPE, hc_mm=110.0 + seed, spacing_mm=0.2, seed=seed)
    ident = ScanIdentity(patient_id=patient_id, study_date=dt.date(2026, 5, 1),
                         last_menstrual_date=dt.date(2025, 12, 1))
    return write_us_image(path, phantom.image, 0.2, identity=ident)


def other_scan(path: Path, seed: int = 0, patient_id: str = "P-OTHER") -> Path:
    """An image that ``ShapeGate`` refuses (a head phantom too, so only the gate sets it aside)."""
    phantom = make_phantom(shape=OTHER_SHAPE, hc_mm=115.0, spacing_mm=0.2, seed=seed)
    ident = ScanIdentity(patient_id=patient_id, study_date=dt.date(2026, 5, 1),
                         last_menstrual_date=dt.date(2025, 12, 1))
    return write_us_image(path, phantom.image, 0.2, identity=ident)
