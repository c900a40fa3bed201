"""Synthetic ultrasound head phantoms with a known head circumference (tests and the demo)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Phantom:
    """A generated B-mode-like image and the truth it was drawn from (pixel frame).

    ``outer``: (cx, cy, a, b, angle) of the outer skull border, the ellipse HC is measured on.
    """

    image: np.ndarray
    outer: tuple[float, float, float, float, float]
    spacing_mm: float

    @property
    def hc_mm(self) -> float:
        """Ramanujan II perimeter of the outer skull border, in mm."""
        _, _, a, b, _ = self.outer
        h = ((a - b) / (a + b)) ** 2
        return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h))) * self.spacing_mm


def make_phantom(
    shape: tuple[int, int] = (540, 800), hc_mm: float = 180.0, spacing_mm: float = 0.15,
    angle: float = 0.3, aspect: float = 0.78, seed: int = 0,
) -> Phantom:
    """A fetal head phantom: sector of speckle, bright skull ring, midline echo, a shadow.

    Args:
        shape: (rows, cols); hc_mm: outer skull perimeter; spacing_mm: isotropic mm per pixel;
        angle: radians of the long axis; aspect: b/a of the outer ellipse; seed: noise seed.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    # Semi-axes (px) with the requested Ramanujan perimeter: perimeter is linear in scale.
    h = ((1 - aspect) / (1 + aspect)) ** 2
    unit = math.pi * (1 + aspect) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    a = hc_mm / spacing_mm / unit
    b = a * aspect
    cx = cols / 2 + rng.uniform(-0.05, 0.05) * cols
    cy = rows / 2 + rng.uniform(-0.05, 0.05) * rows
    y, x = np.mgrid[:rows, :cols].astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / a
    v = (-(x - cx) * s + (y - cy) * c) / b
    r = np.sqrt(u * u + v * v)  # 1.0 on the outer border

    thickness = max(3.0 / a, 0.035)  # skull thickness as a fraction of the radius
    image = 0.18 + 0.06 * rng.standard_normal((rows, cols))
    brain = r < 1 - thickness
    image = np.where(brain, 0.12 + 0.05 * rng.standard_normal((rows, cols)), image)
    skull = (r <= 1.0) & (r >= 1 - thickness)
    image = np.where(skull, 0.85 + 0.1 * rng.standard_normal((rows, cols)), image)
    midline = brain & (np.abs(v) < 0.02) & (np.abs(u) < 0.8)
    image = np.where(midline, 0.55, image)
    # Speckle: multiplicative Rayleigh noise, blurred a little.
    speckle = rng.rayleigh(1.0, size=(rows, cols)) / 1.25
    image = ndimage.gaussian_filter(image * speckle, 1.0)
    # A sector-shaped field of view (as a curved probe draws it); outside is black.
    apex_y = -rows * 0.15
    theta = np.arctan2(x - cols / 2, y - apex_y)
    radius = np.hypot(x - cols / 2, y - apex_y)
    inside = (np.abs(theta) < 0.75) & (radius < rows * 1.12)
    image = np.where(inside, image, 0.0)
    pixels = np.clip(image * 255, 0, 255).astype(np.uint8)
    return Phantom(pixels, (cx, cy, a, b, angle % math.pi), spacing_mm)
