"""The head-plane gate and the plane classifier as the settings ask for them (gate on, off, a file; a threshold
override; SonoNet-16's file or none) and the refusal note."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.errors import NotHeadPlane
from models.geometry.ellipse import Ellipse
from models.plane.head_plane import HeadPlaneGate, PlaneVerdict, load_gate
from models.plane.sononet import PlaneClassifier, cached_plane_classifier
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


def classifier_for(settings: Settings, device: str = "cpu") -> PlaneClassifier | None:
    """SonoNet-16 from ``FETALHC_PLANE_CLASSIFIER`` (None when unset), through ``FETALHC_BACKEND`` in
    ``FETALHC_PLANE_CLASSIFIER_PRECISION`` (f32 by default), loaded once per process.

    Raises:
        WeightsError: the file is missing, damaged or not SonoNet-16's (measuring stops: nothing is stored
            without the plane evidence the settings ask for).
    """
    if settings.plane_classifier is None:
        return None
    return cached_plane_classifier(str(settings.plane_classifier), settings.backend.value, device,
                                   settings.plane_classifier_precision.value)


def refusal_detail(refusal: NotHeadPlane, frames: int) -> str:
    """The ``detail`` of an instance set aside: why its best frame is not a head plane (the plane decision's
    words, or its head-plane score against the threshold).

    ``frames``: how many frames (or regions) were set aside; the one described is the best-scored of them.
    """
    of = f" (best of {frames} frames)" if frames > 1 else ""
    why = refusal.why or f"head-plane score {refusal.score:.3f} < {refusal.threshold:.3f}"
    return f"not a head plane: {why}{of}"
