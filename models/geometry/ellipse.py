"""Ellipses: direct least-squares fitting, robust refitting, perimeter (Ramanujan II), rasterising."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.errors import MeasurementError


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in one coordinate frame (pixels or millimetres; the caller says which).

    ``cx, cy``: centre (x = column direction, y = row direction); ``a >= b``: semi-axes;
    ``angle``: radians, counter-clockwise from +x to the ``a`` axis in image coordinates
    (y pointing down), normalised to [0, pi).
    """

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def __post_init__(self) -> None:
        if not (self.a > 0 and self.b > 0) or not all(
            math.isfinite(v) for v in (self.cx, self.cy, self.a, self.b, self.angle)
        ):
            raise ValueError(f"not a valid ellipse: {self}")
        if self.b > self.a:
            raise ValueError("semi-axes must satisfy a >= b; use Ellipse.make()")

    @classmethod
    def make(cls, cx: float, cy: float, a: float, b: float, angle: float) -> Ellipse:
        """Build an ellipse, swapping axes so that ``a >= b`` and normalising the angle."""
        if b > a:
            a, b, angle = b, a, angle + math.pi / 2
        return cls(float(cx), float(cy), float(a), float(b), float(angle % math.pi))

    @property
    def perimeter(self) -> float:
        """Perimeter by Ramanujan's second approximation (REFERENCES.md: HC18's own HC)."""
        return ramanujan_perimeter(self.a, self.b)

    def scaled(self, sx: float, sy: float) -> Ellipse:
        """The same ellipse with x multiplied by ``sx`` and y by ``sy`` (e.g. pixels -> mm).

        Exact for anisotropic scales: the conic is transformed and its parameters re-derived.
        """
        if sx == sy:
            return Ellipse.make(self.cx * sx, self.cy * sy, self.a * sx, self.b * sx, self.angle)
        return ellipse_from_conic(_scale_conic(self.conic(), sx, sy))

    def conic(self) -> np.ndarray:
        """Coefficients (A, B, C, D, E, F) of A x^2 + B xy + C y^2 + D x + E y + F = 0."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        a2, b2 = self.a**2, self.b**2
        A = c * c / a2 + s * s / b2
        B = 2 * c * s * (1 / a2 - 1 / b2)
        C = s * s / a2 + c * c / b2
        D = -2 * A * self.cx - B * self.cy
        E = -B * self.cx - 2 * C * self.cy
        F = A * self.cx**2 + B * self.cx * self.cy + C * self.cy**2 - 1
        return np.array([A, B, C, D, E, F])

    def points(self, n: int = 360) -> np.ndarray:
        """``n`` points on the ellipse as an (n, 2) array of (x, y)."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = self.cx + self.a * np.cos(t) * c - self.b * np.sin(t) * s
        y = self.cy + self.a * np.cos(t) * s + self.b * np.sin(t) * c
        return np.stack([x, y], axis=1)

    def filled_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask (rows, cols) of pixel centres inside the ellipse (pixel frame)."""
        rows, cols = np.ogrid[: shape[0], : shape[1]]
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = cols - self.cx, rows - self.cy
        u = (dx * c + dy * s) / self.a
        v = (-dx * s + dy * c) / self.b
        return (u * u + v * v) <= 1.0


def ramanujan_perimeter(a: float, b: float) -> float:
    """Ramanujan II: pi (a+b) (1 + 3h / (10 + sqrt(4 - 3h))), h = ((a-b)/(a+b))^2.

    Not pi*(a+b), which underestimates HC18's reference by 0.6 mm on average.
    """
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def _scale_conic(conic: np.ndarray, sx: float, sy: float) -> np.ndarray:
    A, B, C, D, E, F = conic
    # Substitute x = x'/sx, y = y'/sy.
    return np.array([A / sx**2, B / (sx * sy), C / sy**2, D / sx, E / sy, F])


def ellipse_from_conic(conic: np.ndarray) -> Ellipse:
    """Centre, semi-axes and angle of the ellipse given by a general conic."""
    A, B, C, D, E, F = (float(v) for v in conic)
    det = 4 * A * C - B * B
    if det <= 0:
        raise MeasurementError("the fitted conic is not an ellipse", reason="ellipse_fit")
    cx = (B * E - 2 * C * D) / det
    cy = (B * D - 2 * A * E) / det
    # Value of the conic at the centre; the quadratic form then gives the axes.
    f0 = A * cx * cx + B * cx * cy + C * cy * cy + D * cx + E * cy + F
    m = np.array([[A, B / 2], [B / 2, C]])
    evals, evecs = np.linalg.eigh(m)
    if f0 == 0 or np.any(-f0 / evals <= 0):
        raise MeasurementError("the fitted conic is degenerate", reason="ellipse_fit")
    axes = np.sqrt(-f0 / evals)  # evals ascending -> axes descending
    a, b = float(axes[0]), float(axes[1])
    vx, vy = evecs[:, 0]
    return Ellipse.make(cx, cy, a, b, math.atan2(vy, vx))


def fit_ellipse(xy: np.ndarray) -> Ellipse:
    """Direct least-squares ellipse fit (Fitzgibbon 1999, stable form of Halir & Flusser 1998).

    Args:
        xy: (n, 2) points (x, y), n >= 6.
    Raises:
        MeasurementError: too few points or no ellipse fits them.
    """
    frame = _Frame.of(xy)
    return frame.ellipse(_fit_scatter(frame.design.T @ frame.design))


@dataclass(frozen=True)
class _Frame:
    """Points moved to their centroid and scaled to unit RMS radius (the fit's conditioning; the fit is
    invariant to that similarity), with their design matrix rows (x^2, xy, y^2, x, y, 1)."""

    mean: np.ndarray
    scale: float
    design: np.ndarray

    @classmethod
    def of(cls, xy: np.ndarray) -> _Frame:
        """The frame of (n, 2) points (x, y), n >= 6; ``MeasurementError`` for fewer."""
        xy = np.asarray(xy, dtype=float)
        if xy.ndim != 2 or xy.shape[0] < 6:
            raise MeasurementError("too few boundary points to fit an ellipse", reason="ellipse_fit")
        mean = xy.mean(axis=0)
        centred = xy - mean
        scale = float(np.sqrt((centred**2).sum(axis=1).mean())) or 1.0
        x, y = centred[:, 0] / scale, centred[:, 1] / scale
        return cls(mean, scale, np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=1))

    def sampson(self, conic_n: np.ndarray) -> np.ndarray:
        """Sampson distance of each point to a conic fitted in this frame, in this frame's units."""
        A, B, C, D, E, _ = conic_n
        x, y = self.design[:, 3], self.design[:, 4]
        f = self.design @ conic_n
        gx = 2 * A * x + B * y + D
        gy = B * x + 2 * C * y + E
        return np.abs(f) / np.maximum(np.hypot(gx, gy), 1e-12)

    def ellipse(self, conic_n: np.ndarray) -> Ellipse:
        """The ellipse of a conic fitted in this frame, in the points' own frame."""
        A, B, C, D, E, F = conic_n
        mx, my, s = self.mean[0], self.mean[1], self.scale
        A2, B2, C2 = A / s**2, B / s**2, C / s**2
        D2 = D / s - 2 * A2 * mx - B2 * my
        E2 = E / s - 2 * C2 * my - B2 * mx
        F2 = A2 * mx * mx + B2 * mx * my + C2 * my * my - D / s * mx - E / s * my + F
        return ellipse_from_conic(np.array([A2, B2, C2, D2, E2, F2]))


def _fit_scatter(scatter: np.ndarray) -> np.ndarray:
    """The conic (A..F) minimising algebraic distance under 4AC - B^2 = 1, from the 6 x 6 scatter matrix."""
    s1, s2, s3 = scatter[:3, :3], scatter[:3, 3:], scatter[3:, 3:]
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError as exc:
        raise MeasurementError("boundary points are degenerate", reason="ellipse_fit") from exc
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])
    evals, evecs = np.linalg.eig(m)
    evecs = np.real(evecs)
    cond = 4 * evecs[0] * evecs[2] - evecs[1] ** 2
    ok = np.nonzero(cond > 0)[0]
    if ok.size == 0:
        raise MeasurementError("no ellipse fits the boundary", reason="ellipse_fit")
    a1 = evecs[:, ok[0]]
    return np.concatenate([a1, t @ a1])


def fit_ellipse_robust(xy: np.ndarray, iterations: int = 3, k: float = 3.0) -> tuple[Ellipse, float]:
    """Fit, then refit without outliers (distance > k * 1.4826 * MAD), a few times.

    Returns the ellipse and the fraction of points kept as inliers. Refits reuse the first fit's frame
    and design matrix (only the 6 x 6 scatter of the points kept is formed again); distances are taken in
    that frame (Sampson distance scales with it, so the points kept are the same).
    """
    frame = _Frame.of(xy)
    keep = np.ones(len(frame.design), dtype=bool)
    conic = _fit_scatter(frame.design.T @ frame.design)
    for _ in range(iterations):
        _check_ellipse(conic)
        dist = frame.sampson(conic)
        median = float(np.median(dist))
        mad = float(np.median(np.abs(dist - median))) * 1.4826
        limit = max(k * mad + median, 1e-9 / frame.scale)
        new_keep = dist <= limit
        if new_keep.sum() < max(6, 0.5 * len(keep)) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        kept = frame.design[keep]
        conic = _fit_scatter(kept.T @ kept)
    return frame.ellipse(conic), float(keep.mean())


def _check_ellipse(conic: np.ndarray) -> None:
    """Raise as ``ellipse_from_conic`` does when the conic is not an ellipse (4AC - B^2 <= 0)."""
    if 4 * conic[0] * conic[2] - conic[1] ** 2 <= 0:
        raise MeasurementError("the fitted conic is not an ellipse", reason="ellipse_fit")
