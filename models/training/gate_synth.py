"""Made negatives for the head-plane gate: an HC18 head plane with its skull echo taken out.

No openly licensed fetal abdomen, thorax or femur images could be brought here. What tells those
views from a head is what a head has and they lack: a closed, bright skull echo around the brain
and a midline. So each made view keeps the HC18 image's scanner, speckle, maternal tissue and the
round fetal section, replaces the skull band (and the bright brain structures) with soft tissue,
and adds what the other view shows instead:

- ``abdomen``: a thin skin line, a dark stomach bubble and a bright spine with its shadow;
- ``thorax``: rib echoes as short bright arcs over under 40% of the outline, a darker heart;
- ``femur``: no round outline at all, a bright straight bone with its shadow.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from models.geometry.ellipse import Ellipse


def elliptic_coords(shape: tuple[int, int], e: Ellipse) -> tuple[np.ndarray, np.ndarray]:
    """(rho, theta) of every pixel in ``e``'s frame: rho = 1 on the ellipse, theta its angle."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    c, s = math.cos(e.angle), math.sin(e.angle)
    u = ((xs - e.cx) * c + (ys - e.cy) * s) / e.a
    v = (-(xs - e.cx) * s + (ys - e.cy) * c) / e.b
    return np.hypot(u, v), np.arctan2(v, u)


def _speckle(img: np.ndarray, e: Ellipse, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue speckle at the brain's own level and spread, with a coarse texture of organs.

    Level and spread come from the middle of the head (inside half its short axis, bright echoes
    capped), so the made tissue has this image's brightness; the grain is Rayleigh speckle blurred
    1-2.5 pixels, as B-mode exports show it.
    """
    half = max(int(e.b * 0.42), 4)
    r0, c0 = max(int(round(e.cy)) - half, 0), max(int(round(e.cx)) - half, 0)
    patch = img[r0:r0 + 2 * half, c0:c0 + 2 * half]
    if patch.size < 16:
        patch = img
    patch = np.minimum(patch, np.percentile(patch, 75))
    level, spread = float(np.median(patch)), float(patch.std())
    grain = ndimage.gaussian_filter(rng.rayleigh(1.0, img.shape).astype(np.float32), rng.uniform(1.0, 2.5))
    grain = (grain - grain.mean()) / max(float(grain.std()), 1e-6)
    coarse = ndimage.gaussian_filter(rng.standard_normal(img.shape).astype(np.float32), max(e.b / 5, 2))
    coarse /= max(float(coarse.std()), 1e-6)
    return np.maximum(level * (1 + rng.uniform(0.1, 0.35) * coarse) + 0.6 * spread * grain, 0)


def remove_skull(image: np.ndarray, e: Ellipse, rng: np.random.Generator,
                 edge: float = 0.04, match_outside: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The image with everything inside the outer skull border replaced by soft tissue.

    The replacement is the image's own brain speckle (``_speckle``), so texture and scanner look
    stay those of the image; ``edge`` is how softly (in rho) it blends into what is around, outside
    the skull (so the skull is always covered); ``match_outside`` gives it the brightness of the tissue
    around the head, so that no round section is left.
    Returns the float image and each pixel's rho (elliptic radius, 1 on the outer skull border).
    """
    img = image.astype(np.float32)
    rho, _ = elliptic_coords(image.shape, e)
    gain = rng.uniform(0.9, 1.5)  # soft tissue of a body is often brighter than the brain
    hi = rng.uniform(1.04, 1.1)
    fill = _speckle(img, e, rng)
    if match_outside:
        around = img[(rho > 1.15) & (rho < 1.8) & (img > 4)]
        if around.size:
            gain = float(np.median(around)) / max(float(np.median(fill)), 1.0) * rng.uniform(0.8, 1.2)
    fill = fill * gain
    body = np.clip((hi + edge - rho) / edge, 0, 1)
    out = img * (1 - body) + fill * body
    if edge < 0.1 and rng.random() < 0.5:  # a fluid gap around the body, as around a head
        outer = img[(rho > 1.15) & (rho < 1.5)]
        gap = (rho > hi) & (rho < hi + 0.06)
        if outer.size:
            out[gap] = np.minimum(out[gap], float(np.percentile(outer, 30)))
    return out, rho


def _blob(shape: tuple[int, int], x: float, y: float, rx: float, ry: float) -> np.ndarray:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return np.clip(1.5 - np.hypot((xs - x) / max(rx, 1), (ys - y) / max(ry, 1)), 0, 1)


def _shadow(shape: tuple[int, int], x: float, y: float, width: float) -> np.ndarray:
    """An acoustic shadow below (x, y): the beam is taken to come from the top of the image."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return ((ys > y) & (np.abs(xs - x) < width)).astype(np.float32)


def _on_ellipse(e: Ellipse, t: float, r: float) -> tuple[float, float]:
    c, s = math.cos(e.angle), math.sin(e.angle)
    u, v = r * e.a * math.cos(t), r * e.b * math.sin(t)
    return e.cx + u * c - v * s, e.cy + u * s + v * c


def make_abdomen(image: np.ndarray, e: Ellipse, seed: int) -> np.ndarray:
    """A fetal abdomen-like section from a head plane (skin line, stomach, spine)."""
    rng = np.random.default_rng(seed)
    out, rho = remove_skull(image, e, rng)
    tissue = float(np.median(out[rho < 0.7]))
    if rng.random() < 0.7:  # skin line
        line = np.clip(1 - np.abs(rho - 1.0) / 0.015, 0, 1)
        out += line * tissue * rng.uniform(0.3, 0.9)
    x, y = _on_ellipse(e, rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.45))
    r = e.b * rng.uniform(0.12, 0.28)
    out *= 1 - 0.85 * _blob(image.shape, x, y, r, r * rng.uniform(0.6, 1.0))  # stomach bubble
    t = rng.uniform(0, 2 * math.pi)
    for k in range(3):  # spine: three ossification centres
        x, y = _on_ellipse(e, t + (k - 1) * 0.12, 0.78 + 0.06 * (k == 1))
        out += _blob(image.shape, x, y, e.b * 0.06, e.b * 0.06) * rng.uniform(120, 220)
    out *= 1 - 0.6 * _shadow(image.shape, x, y + e.b * 0.08, e.b * 0.12)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_thorax(image: np.ndarray, e: Ellipse, seed: int) -> np.ndarray:
    """A thorax-like section: rib arcs over part of the outline, a darker heart, the spine."""
    rng = np.random.default_rng(seed)
    out, rho = remove_skull(image, e, rng)
    _, theta = elliptic_coords(image.shape, e)
    coverage = rng.uniform(0.1, 0.38)
    n_ribs = int(rng.integers(2, 6))
    width = 2 * math.pi * coverage / n_ribs
    for start in rng.uniform(-math.pi, math.pi, n_ribs):
        dt = np.angle(np.exp(1j * (theta - start)))
        arc = (dt > 0) & (dt < width) & (np.abs(rho - 0.95) < 0.035)
        out[arc] += rng.uniform(90, 180)
    x, y = _on_ellipse(e, rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.35))
    out *= 1 - 0.5 * _blob(image.shape, x, y, e.b * 0.35, e.b * 0.3)  # heart: darker chambers
    x, y = _on_ellipse(e, rng.uniform(0, 2 * math.pi), 0.8)
    out += _blob(image.shape, x, y, e.b * 0.07, e.b * 0.07) * rng.uniform(120, 220)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_femur(image: np.ndarray, e: Ellipse, seed: int) -> np.ndarray:
    """A femur-like view: no round section, a bright straight bone with its shadow below it."""
    rng = np.random.default_rng(seed)
    out, rho = remove_skull(image, e, rng, edge=0.3, match_outside=True)  # no round section is left
    length = e.a * rng.uniform(1.0, 1.8)
    ang = rng.uniform(-0.5, 0.5)
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    u = (xs - e.cx) * math.cos(ang) + (ys - e.cy) * math.sin(ang)
    v = -(xs - e.cx) * math.sin(ang) + (ys - e.cy) * math.cos(ang)
    along = np.clip(1 - np.abs(u) / (length / 2), 0, 1) ** 0.2
    bone = np.clip(1 - np.abs(v) / max(e.b * 0.05, 2), 0, 1) * along
    shadow = (v > 0) * along * np.exp(-np.maximum(v, 0) / max(e.b, 1))
    out = out * (1 - 0.6 * shadow) + bone * rng.uniform(150, 230)
    return np.clip(out, 0, 255).astype(np.uint8)


MAKERS = {"abdomen": make_abdomen, "thorax": make_thorax, "femur": make_femur}


def make_view(kind: str, image: np.ndarray, e: Ellipse, seed: int) -> np.ndarray:
    """The made ``kind`` of view (abdomen | thorax | femur) from a head plane and its skull ellipse."""
    return MAKERS[kind](image, e, seed)


def ring_phantom(seed: int, ring: bool = True, shape: tuple[int, int] = (540, 800)) -> tuple[np.ndarray, Ellipse]:
    """A drawn section in speckle: with ``ring`` a head (bright skull band, midline), without it a
    filled ellipse (a body section with no skull). Returns the uint8 image and the outer ellipse."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    a = rng.uniform(0.12, 0.42) * rows
    b = a * rng.uniform(0.7, 0.95)
    e = Ellipse.make(cols / 2 + rng.uniform(-0.15, 0.15) * cols, rows / 2 + rng.uniform(-0.12, 0.12) * rows,
                     a, b, rng.uniform(0, math.pi))
    rho, theta = elliptic_coords(shape, e)
    background = rng.uniform(0.1, 0.25)
    image = background + 0.06 * rng.standard_normal(shape)
    inside = rho < 1.0
    body = background * rng.uniform(0.5, 1.6)
    image = np.where(inside, body + 0.05 * rng.standard_normal(shape), image)
    if ring:
        thickness = max(3.0 / a, rng.uniform(0.03, 0.07))
        gap = rng.uniform(0, 0.5)  # beam-parallel dropout of part of the skull
        dim = np.abs(np.sin(theta)) < gap * 0.6
        skull = (rho <= 1.0) & (rho >= 1 - thickness)
        image = np.where(skull, np.where(dim, 0.5, 0.85) + 0.1 * rng.standard_normal(shape), image)
        _, v = rho * np.cos(theta), rho * np.sin(theta)
        midline = (rho < 0.8) & (np.abs(rho * np.sin(theta)) < 0.02)
        image = np.where(midline & (rng.random() < 0.8), 0.55, image)
    else:
        edge = np.abs(rho - 1.0) < 0.015
        image = np.where(edge & (rng.random() < 0.5), body * 1.5, image)
    speckle = rng.rayleigh(1.0, size=shape) / 1.25
    image = ndimage.gaussian_filter(image * speckle, rng.uniform(0.7, 1.5))
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    apex_y = -rows * rng.uniform(0.05, 0.3)
    angle = np.arctan2(xs - cols / 2, ys - apex_y)
    field = (np.abs(angle) < rng.uniform(0.6, 0.9)) & (np.hypot(xs - cols / 2, ys - apex_y) < rows * 1.12)
    image = np.where(field, image, 0.0)
    return np.clip(image * 255, 0, 255).astype(np.uint8), e
