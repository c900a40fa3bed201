"""The head-plane gate as the settings ask for it (on, off, a file; a threshold override) and its refusal note."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.errors import NotHeadPlane
from models.geometry.ellipse import Ellipse
from models.plane.head_plane import HeadPlaneGate, PlaneVerdict, load_gate
from worker.core.settings import Settings


class ThresholdOverride(HeadPlaneGate):
    """Another gate's probabilities against ``threshold`` (``FETALHC_HEAD_PLANE_THRESHOLD``) instead of its own."""

    def __init__(self, inner: HeadPlaneGate, threshold: float) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"a head-plane threshold is a probability from 0 to 1, not {threshold}")
        self.inner = inner
        self.threshold = float(threshold)

    def verdicts(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Ellipse | None]) -> list[PlaneVerdict]:
        return [PlaneVerdict(v.probability, self.threshold) for v in self.inner.verdicts(images, ellipses_px)]


def gate_for(settings: Settings, device: str = "cpu") -> HeadPlaneGate | None:
    """The gate ``FETALHC_HEAD_PLANE_GATE`` names (None when ``off``), loaded once per process.

    Raises:
        WeightsError: the gate file (the shipped one for ``on``) is missing or unreadable.
    """
    if settings.head_plane_gate == "off":
        return None
    gate = load_gate(None if settings.head_plane_gate == "on" else settings.head_plane_gate, device,
                     settings.backend.value)
    if settings.head_plane_threshold is not None:
        return ThresholdOverride(gate, settings.head_plane_threshold)
    return gate


def refusal_detail(refusal: NotHeadPlane, frames: int) -> str:
    """The ``detail`` of an instance set aside: its best head-plane score against the threshold.

    ``frames``: how many frames (or regions) the gate refused; the score is the best of them.
    """
    of = f" (best of {frames} frames)" if frames > 1 else ""
    return f"not a head plane: head-plane score {refusal.score:.3f} < {refusal.threshold:.3f}{of}"
