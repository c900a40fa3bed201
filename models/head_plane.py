"""The head-plane gate: the probability that an image is a fetal head biometry plane, and its verdict.

An obstetric archive is mostly other anatomy (abdomen, femur, thorax, cervix...). The segmentation
network finds "a head" in many of them, so before an HC is stored the gate asks whether the image
is a head biometry plane (trans-thalamic, trans-ventricular or trans-cerebellar) at all. It joins
two kinds of evidence (``models/weights/MODEL_CARD.md``, "Head-plane gate"):

- the whole image, downsized, through a small MONAI classifier (``models.plane_net``);
- the skull echo along the fitted ellipse: a closed bright ring around a darker brain, and the
  midline (``models.skull_echo``).

A logistic layer turns both into one probability; the operating threshold was chosen on HC18
validation heads alone (at least 99% of them pass).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.ellipse import Ellipse
from models.errors import WeightsError

SHIPPED_GATE = Path(__file__).parent / "weights" / "head_plane_gate.pt"


@dataclass(frozen=True)
class PlaneVerdict:
    """The gate's answer for one image: ``probability`` (0..1) of a head plane against ``threshold``."""

    probability: float
    threshold: float

    @property
    def is_head(self) -> bool:
        """True when the image passes the gate."""
        return self.probability >= self.threshold


class HeadPlaneGate:
    """Scores images as head planes. ``verdicts`` is the one call the pipeline makes."""

    threshold: float

    def verdicts(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Ellipse | None]) -> list[PlaneVerdict]:
        """One verdict per 2-D grey image; ``ellipses_px`` the fitted skull ellipse on it (None: none found)."""
        raise NotImplementedError


@lru_cache(maxsize=4)
def load_gate(path: str | None = None, device: str = "cpu") -> HeadPlaneGate:
    """The gate saved at ``path`` (the shipped one when None), loaded once per process.

    Raises:
        WeightsError: the file is missing or does not hold a gate.
    """
    from models.plane_gate_io import read_gate  # the trained gate's file format (a torch file)

    file = Path(path) if path else SHIPPED_GATE
    if not file.is_file():
        raise WeightsError(f"head-plane gate {file} does not exist; set FETALHC_HEAD_PLANE_GATE=off or train one "
                           "with 'python -m models.train_gate'")
    return read_gate(file, device)
