"""Heads outlined and fitted for a whole batch of logit maps at once, in torch on the maps' own device.

The batched twin of ``biometry.measure_head_on_grid`` / ``biometry.hc_on_grid`` and
``ellipse.fit_ellipse_robust``: the same steps, the same numbers (float64 where the NumPy path is float64),
each map's failure kept as an error code instead of an exception:

- the largest side-connected component of ``logits > 0`` (``largest_components``: row and column run
  sweeps of the smallest pixel index, a torch formulation of connected components that converges in a few
  sweeps on a head; on CPU OpenCV's labelling is faster and gives the same components);
- its holes filled (``outside``: the background reached from the border, 8-connected, the same sweeps)
  and the level crossings on its outer outline (``outline_points``), compacted to (maps, points);
- the direct least-squares ellipse fit and its robust refits (``fit_robust``): the 3 x 3 eigenproblem
  solved in closed form (no LAPACK call, no device synchronisation), medians as NumPy takes them;
- for the mean map, the confidence and the fit's IoU with the component (``quality_terms``).

Everything a caller needs comes back in a few small tensors (``GridFits``), so a batch costs one
device-to-host copy; the host then forms ``Biometry`` values as the NumPy path does (``models.segmentation.device``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from models.geometry.biometry import BORDER_PX, largest_component

# Error codes of a map (0: fitted). Each is one of the NumPy path's MeasurementErrors, in its words.
FIT_OK = 0
NO_HEAD = 1  # fewer than 20 pixels in the largest component
NO_BOUNDARY = 2  # no level crossing on its outline
ON_BORDER = 3  # fewer than 20 crossings away from the image border
TOO_FEW_POINTS = 4  # fewer than 6 points to fit (cannot follow ON_BORDER, kept for completeness)
DEGENERATE_POINTS = 5  # the scatter's 3 x 3 block is singular
NO_ELLIPSE = 6  # no eigenvector of the constrained problem is an ellipse
NOT_ELLIPSE = 7  # a fitted conic with 4AC - B^2 <= 0
DEGENERATE_CONIC = 8  # the conic's centre value or axes are degenerate

FIT_ERRORS: dict[int, tuple[str, str]] = {
    NO_HEAD: ("no fetal head was found in the image", "no_head_found"),
    NO_BOUNDARY: ("no head boundary could be traced", "no_head_found"),
    ON_BORDER: ("the head boundary lies almost entirely on the image border", "no_head_found"),
    TOO_FEW_POINTS: ("too few boundary points to fit an ellipse", "ellipse_fit"),
    DEGENERATE_POINTS: ("boundary points are degenerate", "ellipse_fit"),
    NO_ELLIPSE: ("no ellipse fits the boundary", "ellipse_fit"),
    NOT_ELLIPSE: ("the fitted conic is not an ellipse", "ellipse_fit"),
    DEGENERATE_CONIC: ("the fitted conic is degenerate", "ellipse_fit"),
}

MIN_COMPONENT_PX = 20
MIN_POINTS = 20


# -- connected components by run sweeps -------------------------------------------------------------------


def _run_min(labels: torch.Tensor, allowed: torch.Tensor, dim: int, stride: int) -> torch.Tensor:
    """Each allowed pixel's label replaced by the smallest label of its run of allowed pixels along ``dim``.

    A segmented minimum by one cumulative minimum each way: the keys of the runs already passed are offset
    above every key of the current run, so the running minimum never reaches across a break (``stride``:
    more than the largest label). Pixels not allowed keep their label.
    """
    run = (~allowed).to(labels.dtype).cumsum(dim)
    off = (run.amax(dim=dim, keepdim=True) - run) * stride
    ahead = torch.cummin(labels + off, dim).values - off  # the minimum of each run up to here
    up = run * stride
    whole = torch.cummin((ahead + up).flip(dim), dim).values.flip(dim) - up  # ... and of the rest of the run
    return torch.where(allowed, whole, labels)


def label_components(fg: torch.Tensor) -> torch.Tensor:
    """Side-connected (4-connected) components of a (M, H, W) boolean tensor: each foreground pixel labelled
    by the smallest flat index (row-major) in its component, background ``H * W``."""
    m, h, w = fg.shape
    big = h * w
    index = torch.arange(big, device=fg.device, dtype=torch.int64).view(1, h, w).expand(m, h, w)
    labels = torch.where(fg, index, torch.full_like(index, big))
    stride = big + 1
    while True:
        before = labels
        labels = _run_min(labels, fg, 2, stride)
        labels = _run_min(labels, fg, 1, stride)
        if torch.equal(labels, before):
            return labels


def largest_components(fg: torch.Tensor, native: bool | None = None) -> torch.Tensor:
    """The largest side-connected component of each (H, W) map of ``fg`` (the first in raster order on a
    tie, as ``biometry.largest_component``); all False where a map has no foreground.

    ``native`` (default: on CPU) labels with OpenCV map by map, faster there; otherwise ``label_components``.
    """
    m, h, w = fg.shape
    if native is None:
        native = fg.device.type == "cpu"
    if native:
        out = np.zeros((m, h, w), dtype=bool)
        masks = fg.numpy()
        for i in range(m):
            out[i] = largest_component(masks[i], connectivity=4)
        return torch.from_numpy(out)
    big = h * w
    labels = label_components(fg).view(m, -1)
    area = torch.zeros(m, big + 1, device=fg.device, dtype=torch.int32)
    area.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.int32))
    area[:, big] = 0
    chosen = area.argmax(dim=1, keepdim=True)  # first of equal areas: the smallest label, first in raster order
    return ((labels == chosen) & (area.gather(1, chosen) > 0)).view(m, h, w)


def outside(chosen_padded: torch.Tensor, native: bool | None = None) -> torch.Tensor:
    """Pixels of (M, H, W) maps, padded by one ring outside the component, that are reached from that ring
    through pixels outside the component, 8-connected (the rest is the component and its holes).

    ``native`` (default: on CPU) flood-fills with OpenCV map by map, as ``biometry.outline_points`` does.
    """
    free = ~chosen_padded
    if native is None:
        native = free.device.type == "cpu"
    if native:
        maps = free.numpy().astype(np.uint8)
        for i in range(len(maps)):
            cv2.floodFill(maps[i], None, (0, 0), 2, flags=8)
        return torch.from_numpy(maps == 2)
    m, h, w = free.shape
    ring = torch.zeros_like(free)
    ring[:, 0, :] = True
    ring[:, -1, :] = True
    ring[:, :, 0] = True
    ring[:, :, -1] = True
    labels = torch.where(ring & free, 0, 1).to(torch.int64)
    while True:
        before = labels
        labels = _run_min(labels, free, 2, 2)
        labels = _run_min(labels, free, 1, 2)
        # The diagonal step of 8-connectivity: a free pixel next to a reached one, corner to corner.
        reached = (labels == 0).to(torch.float32)[:, None]
        near = torch.nn.functional.max_pool2d(reached, 3, stride=1, padding=1)[:, 0] > 0
        labels = torch.where(free & near, torch.zeros_like(labels), labels)
        if torch.equal(labels, before):
            return labels == 0


# -- the outline's level crossings ---------------------------------------------------------------------------


@dataclass
class Outline:
    """Level crossings of each map's chosen outline, compacted: ``xy`` (M, P, 2) grid (x, y), float64;
    ``valid`` (M, P); ``count`` (M,) points kept; ``error`` (M,) codes; ``mask`` (M, H, W) the component."""

    xy: torch.Tensor
    valid: torch.Tensor
    count: torch.Tensor
    error: torch.Tensor
    mask: torch.Tensor


def outline_points(logits: torch.Tensor, level: float = 0.0, native_components: bool | None = None) -> Outline:
    """``biometry.boundary_points(logits, level)`` for each (H, W) map of (M, H, W) float32 logits."""
    m, h, w = logits.shape
    dev = logits.device
    mask = largest_components(logits > level, native_components).to(dev)
    area = mask.sum(dim=(1, 2))
    low = torch.minimum(logits.amin(dim=(1, 2)), torch.tensor(level, dtype=logits.dtype, device=dev)) - 1.0
    low3 = low.view(m, 1, 1)
    sub = torch.where(mask | (logits <= level), logits, low3)
    field = low3.expand(m, h + 2, w + 2).clone()
    field[:, 1:-1, 1:-1] = sub
    chosen = torch.nn.functional.pad(mask, (1, 1, 1, 1), value=False)
    solid = ~outside(chosen, native_components).to(dev)
    maps, ys, xs = [], [], []
    for axis in (1, 2):  # crossings between row neighbours, then between column neighbours (NumPy's order)
        a = solid[:, :-1, :] if axis == 1 else solid[:, :, :-1]
        b = solid[:, 1:, :] if axis == 1 else solid[:, :, 1:]
        i, r, c = torch.nonzero(a != b, as_tuple=True)
        v0 = field[i, r, c]
        v1 = field[i, r + 1, c] if axis == 1 else field[i, r, c + 1]
        t = ((level - v0) / (v1 - v0)).to(torch.float64)
        maps.append(i)
        ys.append((r + t if axis == 1 else r.to(torch.float64)) - 1.0)
        xs.append((c.to(torch.float64) if axis == 1 else c + t) - 1.0)
    i, y, x = torch.cat(maps), torch.cat(ys), torch.cat(xs)
    traced = torch.bincount(i, minlength=m)
    inside = (x > BORDER_PX) & (y > BORDER_PX) & (x < w - 1 - BORDER_PX) & (y < h - 1 - BORDER_PX)
    i, y, x = i[inside], y[inside], x[inside]
    count = torch.bincount(i, minlength=m)
    error = torch.zeros(m, dtype=torch.int64, device=dev)
    error = torch.where(count < MIN_POINTS, torch.full_like(error, ON_BORDER), error)
    error = torch.where(traced == 0, torch.full_like(error, NO_BOUNDARY), error)
    error = torch.where(area < MIN_COMPONENT_PX, torch.full_like(error, NO_HEAD), error)
    # Compaction: each map's crossings side by side in a row of (M, P) (one host read: the longest outline).
    width = max(int(count.max().item()) if m else 0, 1)
    order = torch.sort(i, stable=True)
    i, y, x = order.values, y[order.indices], x[order.indices]
    start = torch.cumsum(count, 0) - count
    slot = torch.arange(len(i), device=dev) - start[i]
    xy = torch.zeros(m, width, 2, dtype=torch.float64, device=dev)
    xy[i, slot] = torch.stack([x, y], dim=1)
    valid = torch.arange(width, device=dev).view(1, -1) < count.view(-1, 1)
    return Outline(xy, valid, count, error, mask)


# -- the direct least-squares fit ---------------------------------------------------------------------------


@dataclass
class Frame:
    """``ellipse._Frame`` for a batch: points moved to their centroid and scaled to unit RMS radius, their design
    rows (x^2, xy, y^2, x, y, 1) zeroed where not ``valid``."""

    mean: torch.Tensor  # (M, 2)
    scale: torch.Tensor  # (M,)
    design: torch.Tensor  # (M, P, 6)
    valid: torch.Tensor  # (M, P)
    n: torch.Tensor  # (M,) float64

    @classmethod
    def of(cls, xy: torch.Tensor, valid: torch.Tensor) -> Frame:
        w = valid.to(xy.dtype)
        n = w.sum(dim=1).clamp_min(1.0)
        mean = (xy * w[..., None]).sum(dim=1) / n[:, None]
        centred = (xy - mean[:, None, :]) * w[..., None]
        scale = torch.sqrt((centred**2).sum(dim=2).sum(dim=1) / n)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        x, y = centred[..., 0] / scale[:, None], centred[..., 1] / scale[:, None]
        design = torch.stack([x * x, x * y, y * y, x, y, w], dim=2)
        return cls(mean, scale, design, valid, w.sum(dim=1))

    def scatter(self, keep: torch.Tensor) -> torch.Tensor:
        d = self.design * keep[..., None].to(self.design.dtype)
        return d.transpose(1, 2) @ d

    def sampson(self, conic: torch.Tensor) -> torch.Tensor:
        """Sampson distance of each point to each map's conic (M, 6), in the frame's units."""
        A, B, C, D, E = (conic[:, i : i + 1] for i in range(5))
        x, y = self.design[..., 3], self.design[..., 4]
        f = (self.design @ conic[..., None])[..., 0]
        gx = 2 * A * x + B * y + D
        gy = B * x + 2 * C * y + E
        return f.abs() / torch.clamp_min(torch.hypot(gx, gy), 1e-12)

    def to_points(self, conic: torch.Tensor) -> torch.Tensor:
        """The conic of the points' own frame (``_Frame.ellipse``'s transform), (M, 6)."""
        A, B, C, D, E, F = conic.unbind(1)
        mx, my, s = self.mean[:, 0], self.mean[:, 1], self.scale
        A2, B2, C2 = A / s**2, B / s**2, C / s**2
        D2 = D / s - 2 * A2 * mx - B2 * my
        E2 = E / s - 2 * C2 * my - B2 * mx
        F2 = A2 * mx * mx + B2 * mx * my + C2 * my * my - D / s * mx - E / s * my + F
        return torch.stack([A2, B2, C2, D2, E2, F2], dim=1)


def _inverse3(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of (M, 3, 3) matrices by the adjugate, and whether each is invertible (determinant not 0)."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    co = torch.stack([
        torch.stack([e * i - f * h, c * h - b * i, b * f - c * e], 1),
        torch.stack([f * g - d * i, a * i - c * g, c * d - a * f], 1),
        torch.stack([d * h - e * g, b * g - a * h, a * e - b * d], 1),
    ], 1)
    det = a * co[:, 0, 0] + b * co[:, 1, 0] + c * co[:, 2, 0]
    ok = (det != 0) & torch.isfinite(det)
    safe = torch.where(ok, det, torch.ones_like(det))
    return co / safe[:, None, None], ok


def _largest_eigenvector(m: torch.Tensor) -> torch.Tensor:
    """The eigenvector of the largest eigenvalue of (M, 3, 3) matrices whose eigenvalues are real (closed form:
    the characteristic cubic by the trigonometric method, polished by Newton steps; the vector as the largest
    cross product of two rows of M - lambda I)."""
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    c1 = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0] + m[:, 0, 0] * m[:, 2, 2] - m[:, 0, 2] * m[:, 2, 0]
          + m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1])
    det = _det3(m)
    a = -tr
    p = c1 - a * a / 3
    q = 2 * a**3 / 27 - a * c1 / 3 - det
    neg = torch.clamp_max(p, -1e-300)
    r = torch.sqrt(-neg / 3)
    cos_arg = torch.clamp((3 * q / (2 * neg)) * torch.sqrt(-3 / neg), -1.0, 1.0)
    lam = 2 * r * torch.cos(torch.acos(cos_arg) / 3) - a / 3
    lam = torch.where(p < 0, lam, -a / 3 + torch.sign(-q) * torch.abs(q).pow(1 / 3))
    for _ in range(2):  # Newton on the cubic: the root to full precision
        f = ((lam - tr) * lam + c1) * lam - det
        df = (3 * lam - 2 * tr) * lam + c1
        lam = torch.where(df != 0, lam - f / torch.where(df != 0, df, torch.ones_like(df)), lam)
    shifted = m - lam[:, None, None] * torch.eye(3, dtype=m.dtype, device=m.device)
    r0, r1, r2 = shifted[:, 0], shifted[:, 1], shifted[:, 2]
    cands = torch.stack([torch.linalg.cross(r0, r1), torch.linalg.cross(r0, r2), torch.linalg.cross(r1, r2)], 1)
    norms = cands.norm(dim=2)
    best = norms.argmax(dim=1)
    vec = cands[torch.arange(len(m), device=m.device), best]
    return vec / torch.clamp_min(norms.gather(1, best[:, None]), 1e-300)


def _det3(m: torch.Tensor) -> torch.Tensor:
    return (m[:, 0, 0] * (m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1])
            - m[:, 0, 1] * (m[:, 1, 0] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 0])
            + m[:, 0, 2] * (m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0]))


def fit_scatter(scatter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ellipse._fit_scatter`` for (M, 6, 6) scatters: each conic (M, 6) and its error code (0: fitted)."""
    s1, s2, s3 = scatter[:, :3, :3], scatter[:, :3, 3:], scatter[:, 3:, 3:]
    inv, invertible = _inverse3(s3)
    t = -(inv @ s2.transpose(1, 2))
    mm = s1 + s2 @ t
    reduced = torch.stack([mm[:, 2] / 2, -mm[:, 1], mm[:, 0] / 2], dim=1)
    a1 = _largest_eigenvector(reduced)
    cond = 4 * a1[:, 0] * a1[:, 2] - a1[:, 1] ** 2
    conic = torch.cat([a1, (t @ a1[..., None])[..., 0]], dim=1)
    error = torch.zeros(len(scatter), dtype=torch.int64, device=scatter.device)
    error = torch.where(~((cond > 0) & torch.isfinite(conic).all(dim=1)), torch.full_like(error, NO_ELLIPSE), error)
    error = torch.where(~invertible, torch.full_like(error, DEGENERATE_POINTS), error)
    return conic, error


def _masked_median(values: torch.Tensor, valid: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``np.median`` of each row's valid values (the mean of the two middle ones for an even count)."""
    ordered = torch.where(valid, values, torch.full_like(values, math.inf)).sort(dim=1).values
    n = count.clamp_min(1)
    lo = ((n - 1) // 2).view(-1, 1)
    hi = (n // 2).view(-1, 1)
    return (ordered.gather(1, lo) + ordered.gather(1, hi))[:, 0] / 2


@dataclass
class Fits:
    """Each map's robust fit: the conic in the points' frame (M, 6), the fraction of points kept, error codes."""

    conic: torch.Tensor
    inliers: torch.Tensor
    error: torch.Tensor


def fit_robust(xy: torch.Tensor, valid: torch.Tensor, error: torch.Tensor, iterations: int = 3,
               k: float = 3.0) -> Fits:
    """``ellipse.fit_ellipse_robust`` for each map's points (maps with an ``error`` already are carried along)."""
    frame = Frame.of(xy, valid)
    count = valid.sum(dim=1)
    error = torch.where((error == 0) & (count < 6), torch.full_like(error, TOO_FEW_POINTS), error)
    keep = valid.clone()
    conic, err = fit_scatter(frame.scatter(keep))
    error = torch.where(error == 0, err, error)
    active = error == 0
    for _ in range(iterations):
        not_ellipse = active & (4 * conic[:, 0] * conic[:, 2] - conic[:, 1] ** 2 <= 0)
        error = torch.where(not_ellipse, torch.full_like(error, NOT_ELLIPSE), error)
        active = active & ~not_ellipse
        dist = frame.sampson(conic)
        median = _masked_median(dist, valid, count)
        mad = _masked_median((dist - median[:, None]).abs(), valid, count) * 1.4826
        limit = torch.maximum(k * mad + median, 1e-9 / frame.scale)
        new_keep = valid & (dist <= limit[:, None])
        kept = new_keep.sum(dim=1)
        stop = (kept < torch.clamp_min(0.5 * count, 6)) | (new_keep == keep).all(dim=1)
        active = active & ~stop
        keep = torch.where(active[:, None], new_keep, keep)
        refit, err = fit_scatter(frame.scatter(keep))
        failed = active & (err != 0)
        error = torch.where(failed, err, error)
        conic = torch.where((active & ~failed)[:, None], refit, conic)
        active = active & ~failed
    inliers = keep.sum(dim=1).to(xy.dtype) / count.clamp_min(1).to(xy.dtype)
    return Fits(frame.to_points(conic), inliers, error)


# -- conics and ellipses ------------------------------------------------------------------------------------------


def ellipse_params(conic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ellipse.ellipse_from_conic`` for (M, 6) conics: (M, 5) (cx, cy, a, b, angle before ``Ellipse.make``'s
    normalisation) and error codes."""
    A, B, C, D, E, F = conic.unbind(1)
    det = 4 * A * C - B * B
    safe = torch.where(det > 0, det, torch.ones_like(det))
    cx = (B * E - 2 * C * D) / safe
    cy = (B * D - 2 * A * E) / safe
    f0 = A * cx * cx + B * cx * cy + C * cy * cy + D * cx + E * cy + F
    half = torch.sqrt(((A - C) / 2) ** 2 + (B / 2) ** 2)
    low, high = (A + C) / 2 - half, (A + C) / 2 + half  # eigenvalues of [[A, B/2], [B/2, C]], ascending
    a = torch.sqrt(torch.clamp_min(-f0 / low, 0))
    b = torch.sqrt(torch.clamp_min(-f0 / high, 0))
    angle = 0.5 * torch.atan2(B, A - C) + math.pi / 2  # the smaller eigenvalue's axis: the long one
    swap = b > a  # a conic of the other sign: Ellipse.make's normalisation
    a, b, angle = torch.where(swap, b, a), torch.where(swap, a, b), torch.where(swap, angle + math.pi / 2, angle)
    angle = torch.remainder(angle, math.pi)
    error = torch.zeros(len(conic), dtype=torch.int64, device=conic.device)
    degenerate = (f0 == 0) | ~(-f0 / low > 0) | ~(-f0 / high > 0)
    error = torch.where(degenerate, torch.full_like(error, DEGENERATE_CONIC), error)
    error = torch.where(~(det > 0), torch.full_like(error, NOT_ELLIPSE), error)
    return torch.stack([cx, cy, a, b, angle], dim=1), error


def ellipse_conic(params: torch.Tensor) -> torch.Tensor:
    """``Ellipse.conic`` for (M, 5) (cx, cy, a, b, angle): (M, 6)."""
    cx, cy, a, b, angle = params.unbind(1)
    c, s = torch.cos(angle), torch.sin(angle)
    a2, b2 = a * a, b * b
    A = c * c / a2 + s * s / b2
    B = 2 * c * s * (1 / a2 - 1 / b2)
    C = s * s / a2 + c * c / b2
    D = -2 * A * cx - B * cy
    E = -B * cx - 2 * C * cy
    F = A * cx**2 + B * cx * cy + C * cy**2 - 1
    return torch.stack([A, B, C, D, E, F], dim=1)


def scale_ellipses(params: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """``Ellipse.scaled(sx, sy)`` for (M, 5) ellipses (a plain scaling where sx == sy, else by the conic)."""
    A, B, C, D, E, F = ellipse_conic(params).unbind(1)
    scaled, _ = ellipse_params(torch.stack([A / sx**2, B / (sx * sy), C / sy**2, D / sx, E / sy, F], dim=1))
    plain = torch.stack([params[:, 0] * sx, params[:, 1] * sy, params[:, 2] * sx, params[:, 3] * sx,
                         params[:, 4]], dim=1)
    return torch.where((sx == sy)[:, None], plain, scaled)


def filled_iou(params: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``biometry._iou``: intersection over union of each ellipse (pixel centres inside, grid frame) and mask."""
    m, h, w = mask.shape
    cx, cy, a, b, angle = (v.view(m, 1, 1) for v in params.unbind(1))
    rows = torch.arange(h, device=mask.device, dtype=params.dtype).view(1, h, 1)
    cols = torch.arange(w, device=mask.device, dtype=params.dtype).view(1, 1, w)
    c, s = torch.cos(angle), torch.sin(angle)
    dx, dy = cols - cx, rows - cy
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    filled = (u * u + v * v) <= 1.0
    inter = (filled & mask).sum(dim=(1, 2))
    union = (filled | mask).sum(dim=(1, 2))
    return torch.where(union > 0, inter.to(params.dtype) / union.clamp_min(1).to(params.dtype),
                       torch.zeros_like(inter, dtype=params.dtype))


# -- the whole measurement ------------------------------------------------------------------------------------------


@dataclass
class GridFits:
    """Per map: ``error`` codes (M,), the ellipse in mm before ``Ellipse.make`` (M, 5: cx, cy, a, b, angle),
    the fraction of inliers (M,); per map asked for quality: ``confidence`` and ``iou`` (the rest 0), and the
    ellipse in image pixels (M, 5)."""

    error: torch.Tensor
    ellipse_mm: torch.Tensor
    inliers: torch.Tensor
    confidence: torch.Tensor
    iou: torch.Tensor
    ellipse_px: torch.Tensor


def measure_grid(logits: torch.Tensor, image_shapes: torch.Tensor, spacings_mm: torch.Tensor,
                 quality: torch.Tensor | None = None, native_components: bool | None = None) -> GridFits:
    """``measure_head_on_grid`` / ``hc_on_grid`` for (M, h, w) logits at the network's grid, each of an image of
    ``image_shapes`` (M, 2: rows, cols) with ``spacings_mm`` (M, 2: x, y); ``quality`` (M,) bool: the maps
    whose confidence and IoU are wanted (the means over flips)."""
    m, h, w = logits.shape
    dev = logits.device
    f64 = torch.float64
    outline = outline_points(logits, 0.0, native_components)
    shapes = image_shapes.to(dev, f64)
    scale_x, scale_y = shapes[:, 1] / w, shapes[:, 0] / h  # image pixels per grid sample
    spacing = spacings_mm.to(dev, f64)
    px = (outline.xy + 0.5) * torch.stack([scale_x, scale_y], 1)[:, None, :] - 0.5
    fits = fit_robust(px * spacing[:, None, :], outline.valid, outline.error)
    params, err = ellipse_params(fits.conic)
    error = torch.where(fits.error == 0, err, fits.error)
    confidence = torch.zeros(m, dtype=f64, device=dev)
    iou = torch.zeros(m, dtype=f64, device=dev)
    ok = error == 0
    safe = torch.where(ok[:, None], params, torch.tensor([[0.0, 0.0, 2.0, 1.0, 0.0]], dtype=f64, device=dev))
    ellipse_px = scale_ellipses(safe, 1 / spacing[:, 0], 1 / spacing[:, 1])
    if quality is not None and bool(quality.any()):
        rows = torch.nonzero(quality.to(dev))[:, 0]
        mask = outline.mask[rows]
        prob = torch.sigmoid(logits[rows].clamp(-60.0, 60.0).to(f64))
        area = mask.sum(dim=(1, 2))
        conf = torch.where(area > 0, (prob * mask).sum(dim=(1, 2)) / area.clamp_min(1), torch.zeros_like(area, dtype=f64))
        sx, sy = scale_x[rows], scale_y[rows]
        grid = scale_ellipses(ellipse_px[rows], 1 / sx, 1 / sy)
        grid = torch.stack([grid[:, 0] + 0.5 / sx - 0.5, grid[:, 1] + 0.5 / sy - 0.5, grid[:, 2], grid[:, 3],
                            grid[:, 4]], dim=1)
        confidence[rows] = conf
        iou[rows] = filled_iou(grid, mask)
    return GridFits(error, params, fits.inliers, confidence, iou, ellipse_px)
