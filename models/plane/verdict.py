"""What a head-plane gate answers (``PlaneVerdict``) and the one call the pipeline makes of it (``HeadPlaneGate``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.geometry.ellipse import Ellipse


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
