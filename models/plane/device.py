"""The plane decision of a batch where the network runs: the gate's CNN and skull-echo features, and SonoNet-16,
on the frames' device; then ``gating.judge`` decides on the host as for the NumPy path.

``measure_on_device`` is the batched twin of ``gating.finish_judged(segment_batch(...))``: segmentation and
measurement (``models.segmentation.device``), the gate's whole-image CNN on letterboxed frames, the skull-echo
``FEATURES`` along each fitted ellipse (``skull_features_on_device``: the smoothing, percentiles, radial
profiles and their statistics in torch), and SonoNet-16's logits when a classifier is given; everything
the host needs leaves the device in one (N, K) float64 copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.geometry.biometry import Biometry
from models.plane.gating import PlaneJudgement, judge
from models.plane.net import INPUT_SIZE as GATE_INPUT_SIZE
from models.plane.skull_echo import BRIGHT_STEP, FEATURES, INNER, N_ANGLES, OUTER, RHO, RING
from models.plane.sononet import INPUT_SIZE as SONONET_INPUT_SIZE
from models.plane.sononet import LIT_FRACTION, N_CLASSES, KNOWN_SCREENS, PlaneClassifier, PlaneProbabilities
from models.plane.verdict import HeadPlaneGate, PlaneVerdict
from models.segmentation.backends import ForwardPass
from models.segmentation.device import DeviceBatch, finish_on_host, segment_on_device, unit_frames
from models.segmentation.preprocess import normalise
from models.segmentation.segment import SegmentedBatch

# -- the gate's CNN ------------------------------------------------------------------------------------------------


def letterbox_on_device(unit: Sequence[torch.Tensor], size: tuple[int, int] = GATE_INPUT_SIZE) -> torch.Tensor:
    """``net.letterbox`` of each 0..1 frame on its device, normalised (``plane_logits``' input), (N, 1, rows, cols)."""
    out = torch.zeros((len(unit), 1, *size), dtype=torch.float32, device=unit[0].device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(unit):
        groups.setdefault(tuple(f.shape), []).append(i)
    for (h, w), indices in groups.items():
        scale = min(size[0] / h, size[1] / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = torch.stack([unit[i] for i in indices])[:, None]
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        r0, c0 = (size[0] - nh) // 2, (size[1] - nw) // 2
        out[torch.tensor(indices, device=out.device), :, r0:r0 + nh, c0:c0 + nw] = x
    return normalise(out)


# -- skull-echo features ---------------------------------------------------------------------------------------------


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a 1-D signal of length ``n`` padded by ``pad`` each side, OpenCV's BORDER_REFLECT (fedcba|abcdef)."""
    j = torch.arange(-pad, n + pad, device=device)
    j = torch.where(j < 0, -j - 1, j)
    j = torch.where(j >= n, 2 * n - 1 - j, j)
    return j.clamp(0, n - 1)


def gaussian_smooth_on_device(images: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """``skull_echo.gaussian_smooth`` of each (H, W) image of a (N, H, W) float32 batch at its own sigma: one
    grouped separable convolution (kernels zero-padded to the largest radius), borders reflected as OpenCV."""
    n, h, w = images.shape
    radii = [int(4.0 * s + 0.5) for s in sigmas]
    pad = max(radii)
    kernels = np.zeros((n, 2 * pad + 1), np.float64)
    for i, (sigma, r) in enumerate(zip(sigmas, radii)):
        x = np.arange(-r, r + 1, dtype=np.float64)
        k = np.exp(-0.5 * (x / sigma) ** 2)
        kernels[i, pad - r:pad + r + 1] = k / k.sum()
    weight = torch.from_numpy(kernels.astype(np.float32)).to(images.device)
    x = images.index_select(2, _reflect_index(w, pad, images.device))
    x = F.conv2d(x[None], weight.view(n, 1, 1, -1), groups=n)[0]
    x = x.index_select(1, _reflect_index(h, pad, images.device))
    return F.conv2d(x[None], weight.view(n, 1, -1, 1), groups=n)[0]


def _quantile_rows(values: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """NumPy's linear percentile ``q`` (0..100) of each row's valid values; NaN where a row has none."""
    ordered = torch.where(valid, values, torch.full_like(values, math.inf)).sort(dim=-1).values
    n = valid.sum(dim=-1)
    pos = (n - 1).clamp_min(0).to(torch.float64) * (q / 100.0)
    lo = pos.floor().to(torch.int64)
    hi = torch.minimum(lo + 1, (n - 1).clamp_min(0))
    frac = (pos - lo.to(torch.float64)).to(values.dtype)
    a = ordered.gather(-1, lo[..., None])[..., 0]
    b = ordered.gather(-1, hi[..., None])[..., 0]
    out = a * (1 - frac) + b * frac
    out = torch.where(frac == 0, a, out)  # 0 x inf would be NaN where the upper neighbour is a missing value
    return torch.where(n > 0, out, torch.full_like(out, math.nan))


def _bilinear(smooth: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """``ndimage.map_coordinates(order=1, mode="nearest")`` of each (H, W) image at its (N, ...) points."""
    n, h, w = smooth.shape
    shape = ys.shape
    y = ys.reshape(n, -1).clamp(0, h - 1)
    x = xs.reshape(n, -1).clamp(0, w - 1)
    y0, x0 = y.floor(), x.floor()
    fy, fx = y - y0, x - x0
    y0i, x0i = y0.to(torch.int64), x0.to(torch.int64)
    y1i, x1i = (y0i + 1).clamp_max(h - 1), (x0i + 1).clamp_max(w - 1)
    flat = smooth.reshape(n, -1).to(torch.float64)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat.gather(1, r * w + c)

    value = ((1 - fy) * ((1 - fx) * at(y0i, x0i) + fx * at(y0i, x1i))
             + fy * ((1 - fx) * at(y1i, x0i) + fx * at(y1i, x1i)))
    return value.to(torch.float32).reshape(shape)


def _longest_circular_run(flags: torch.Tensor) -> torch.Tensor:
    """``skull_echo._longest_run`` of each row of (N, A) booleans."""
    n, a = flags.shape
    doubled = torch.cat([flags, flags], dim=1)
    pos = torch.arange(2 * a, device=flags.device).expand(n, -1)
    last_break = torch.cummax(torch.where(doubled, torch.full_like(pos, -1), pos), dim=1).values
    return torch.clamp_max((pos - last_break).amax(dim=1), a)


@torch.inference_mode()
def skull_features_on_device(frames: Sequence[torch.Tensor], ellipses_px: torch.Tensor,
                             has_ellipse: torch.Tensor) -> torch.Tensor:
    """``skull_echo.skull_features`` of each 2-D uint8 frame and its ellipse (N, 5: cx, cy, a, b, angle in its
    pixels; rows without ``has_ellipse`` or with b < 4 get zeros), (N, len(FEATURES)) float32 on the device."""
    n = len(frames)
    device = frames[0].device
    out = torch.zeros((n, len(FEATURES)), dtype=torch.float32, device=device)
    e = ellipses_px.to(device, torch.float64)
    usable = has_ellipse.to(device) & (e[:, 3] >= 4)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape), []).append(i)
    for (h, w), indices in groups.items():
        idx = torch.tensor(indices, device=device)
        ell = e[idx]
        images = torch.stack([frames[i] for i in indices]).to(torch.float32)
        sigmas = [max(1.0, float(b) / 50) for b in ell[:, 3].tolist()]  # one small host read: the kernels
        smooth = gaussian_smooth_on_device(images, sigmas)
        sample = smooth[:, ::4, ::4].reshape(len(indices), -1)
        lit = sample > 4
        few = lit.sum(dim=1, keepdim=True) < 16
        chosen = torch.where(few, torch.ones_like(lit), lit)
        lo = _quantile_rows(sample.to(torch.float64), chosen, 10)
        hi = _quantile_rows(sample.to(torch.float64), chosen, 99.5)
        span = torch.clamp_min(hi - lo, 1.0)
        cx, cy, a, b, angle = (v[:, None, None] for v in ell.unbind(1))
        t = torch.linspace(0, 2 * math.pi, N_ANGLES + 1, dtype=torch.float64, device=device)[:-1].view(1, -1, 1)
        rho = torch.from_numpy(RHO).to(device).view(1, 1, -1)
        c, s = torch.cos(angle), torch.sin(angle)
        u, v = rho * a * torch.cos(t), rho * b * torch.sin(t)
        xs, ys = cx + u * c - v * s, cy + u * s + v * c
        line_u = torch.linspace(-0.6, 0.6, 49, dtype=torch.float64, device=device).view(1, 1, -1) * a
        line_v = torch.tensor([0.0, 0.25, -0.25], dtype=torch.float64, device=device).view(1, -1, 1) * b
        line_xs, line_ys = cx + line_u * c - line_v * s, cy + line_u * s + line_v * c
        inside = (xs >= 0) & (ys >= 0) & (xs <= w - 1) & (ys <= h - 1)
        prof = (_bilinear(smooth, ys, xs) - lo.view(-1, 1, 1).to(torch.float32)) / span.view(-1, 1, 1).to(torch.float32)
        ring_band = torch.from_numpy(RING).to(device).view(1, 1, -1)
        inner_band = torch.from_numpy(np.flatnonzero(INNER)).to(device)  # indices, not masks: no device sync
        outer_band = torch.from_numpy(np.flatnonzero(OUTER)).to(device)
        in_ring = inside & ring_band
        ring = torch.where(in_ring, prof, torch.full_like(prof, -math.inf)).amax(dim=2)
        ring = torch.where(in_ring.any(dim=2), ring, torch.full_like(ring, math.nan))
        inner = _quantile_rows(prof.index_select(2, inner_band), inside.index_select(2, inner_band), 75)
        outer = _quantile_rows(prof.index_select(2, outer_band), inside.index_select(2, outer_band), 50)
        where = torch.where(in_ring, prof, torch.full_like(prof, -9.0)).argmax(dim=2)
        seen = torch.isfinite(ring)
        enough = seen.sum(dim=1) >= N_ANGLES // 4
        outer_f = torch.where(torch.isfinite(outer), outer, inner)
        bright = seen & (ring > inner + BRIGHT_STEP) & (ring > outer_f + BRIGHT_STEP) & (ring > 0.3)
        band_n = in_ring.sum(dim=2)
        band_mean = torch.where(in_ring, prof, torch.zeros_like(prof)).sum(dim=2) / band_n.clamp_min(1)
        band_mean = torch.where(band_n > 0, band_mean, torch.full_like(band_mean, math.nan))
        lines = _bilinear(smooth, line_ys, line_xs).mean(dim=2)
        midline = (lines[:, 0] - 0.5 * (lines[:, 1] + lines[:, 2])) / span.to(torch.float32)

        def median(values: torch.Tensor) -> torch.Tensor:
            return _quantile_rows(values, torch.isfinite(values), 50)

        seen_f = seen.to(torch.float32)
        n_seen = seen_f.sum(dim=1).clamp_min(1)
        rho_at = torch.from_numpy(RHO.astype(np.float32)).to(device)[where]
        rho_mean = (rho_at * seen_f).sum(dim=1) / n_seen
        rho_std = torch.sqrt(((rho_at - rho_mean[:, None]) ** 2 * seen_f).sum(dim=1) / n_seen)
        diag = math.hypot(h, w)
        feats = torch.stack([
            torch.ones(len(indices), device=device),
            median(ring), median(ring - inner), median(ring - outer_f),
            (bright & seen).to(torch.float32).sum(dim=1) / n_seen,
            _longest_circular_run(bright).to(torch.float32) / N_ANGLES,
            rho_std, median(ring - band_mean), median(inner), midline,
            (ell[:, 3] / ell[:, 2]).to(torch.float32), (ell[:, 2] / diag).to(torch.float32),
            seen_f.mean(dim=1),
        ], dim=1)
        feats = torch.nan_to_num(feats, nan=0.0)
        keep = usable[idx] & enough
        out[idx] = torch.where(keep[:, None], feats, torch.zeros_like(feats))
    return out


# -- SonoNet-16 -------------------------------------------------------------------------------------------------------


def sononet_input_on_device(frames: Sequence[torch.Tensor], size: tuple[int, int] = SONONET_INPUT_SIZE,
                            ) -> torch.Tensor:
    """``sononet.prepare`` of each 2-D grey frame on its device: cut to its picture (``picture_box``), resized
    bilinearly (no antialiasing, as OpenCV), standardised and times 255; (N, 1, rows, cols)."""
    out = []
    for f in frames:
        grey = f.to(torch.float32)
        h, w = grey.shape
        known = KNOWN_SCREENS.get((int(h), int(w)))
        if known is not None:
            r0, r1, c0, c1 = known
            box = grey[r0:r1, c0:c1]
        else:
            lo, hi = grey.min(), grey.max()
            lit = grey > lo + LIT_FRACTION * (hi - lo)
            rows = torch.nonzero(lit.any(dim=1))[:, 0]
            cols = torch.nonzero(lit.any(dim=0))[:, 0]
            if len(rows) < 16 or len(cols) < 16:
                box = grey
            else:
                box = grey[int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
        x = F.interpolate(box[None, None], size=size, mode="bilinear", align_corners=False)[0]
        std = x.std(correction=0)
        x = (x - x.mean()) / torch.where(std > 1e-6, std, torch.ones_like(std)) * 255.0
        out.append(x)
    return torch.stack(out)


# -- the whole batch --------------------------------------------------------------------------------------------------


class _Given(HeadPlaneGate):
    """A gate whose verdicts were worked out already (for ``judge``)."""

    def __init__(self, verdicts: list[PlaneVerdict], threshold: float) -> None:
        self.given, self.threshold = verdicts, threshold

    def verdicts(self, images: Sequence[Any], ellipses_px: Sequence[Any]) -> list[PlaneVerdict]:
        return self.given


class _GivenPlanes:
    """A classifier whose answers were worked out already (for ``judge``)."""

    def __init__(self, planes: list[PlaneProbabilities]) -> None:
        self.planes = planes

    def classify(self, images: Sequence[Any]) -> list[PlaneProbabilities]:
        return self.planes


def _trained(gate: HeadPlaneGate | None) -> tuple[Any, float] | None:
    """The trained gate under ``gate`` (a threshold override's inner one) and the threshold to judge by; None when
    ``gate`` is not a trained gate this module can run on the device."""
    if gate is None:
        return None
    inner = getattr(gate, "inner", gate)
    if all(hasattr(inner, name) for name in ("net", "input_size", "logits_from", "verdicts_of")):
        return inner, float(gate.threshold)
    return None


@torch.inference_mode()
def measure_on_device(net: nn.Module | ForwardPass, frames: Sequence[torch.Tensor],
                      spacings_mm: Sequence[tuple[float, float]], input_size: tuple[int, int],
                      gate: HeadPlaneGate | None = None, classifier: PlaneClassifier | None = None,
                      native_components: bool | None = None,
                      ) -> tuple[list[Biometry | Exception], list[PlaneJudgement | None]]:
    """``gating.finish_judged(segment_batch(...))`` for 2-D frames on the network's device: each image's Biometry
    or error (``NotHeadPlane`` for one refused) and its plane judgement, with one device-to-host copy.

    A gate that is not the trained kind (a test double) is asked on host copies of the frames.
    """
    if not frames:
        return [], []
    batch: DeviceBatch = segment_on_device(net, frames, spacings_mm, input_size, native_components=native_components)
    trained = _trained(gate)
    parts = [batch.packed]
    if trained is not None:
        inner, _ = trained
        unit = unit_frames(frames)
        cnn = (inner.forward or inner.net)(letterbox_on_device(unit, inner.input_size)).float().reshape(-1)
        feats = skull_features_on_device(frames, batch.ellipse_px, batch.has_ellipse)
        parts += [cnn.to(torch.float64)[:, None], feats.to(torch.float64)]
    if classifier is not None:
        logits = classifier.forward(sononet_input_on_device(frames)).float().reshape(len(frames), N_CLASSES)
        parts.append(logits.to(torch.float64))
    host = torch.cat(parts, dim=1).cpu().numpy()  # the batch's one copy to the host
    width = batch.packed.shape[1]
    results = finish_on_host(batch, host[:, :width])
    todo = [i for i, r in enumerate(results) if not _blank(r)]
    images: list[Any] = list(frames)
    given_gate: HeadPlaneGate | None = gate
    if trained is not None:
        inner, threshold = trained
        cnn = host[:, width].astype(np.float32)
        feats = host[:, width + 1:width + 1 + len(FEATURES)].astype(np.float32)
        feats = np.where(np.array([isinstance(r, Biometry) for r in results])[:, None], feats, 0.0).astype(np.float32)
        verdicts = inner.verdicts_of(inner.logits_from(cnn[todo], feats[todo]))
        given_gate = _Given([PlaneVerdict(v.probability, threshold) for v in verdicts], threshold)
    elif gate is not None:
        images = [f.cpu().numpy() for f in frames]
    given_planes: Any = None
    if classifier is not None:
        z = host[:, -N_CLASSES:][todo].astype(np.float32).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        given_planes = _GivenPlanes([PlaneProbabilities(tuple(float(v) for v in row)) for row in p])
    segmented = SegmentedBatch(images, batch.spacings_mm, todo, [], [None] * len(frames))
    return judge(given_gate, segmented, results, given_planes)


def _blank(result: Biometry | Exception) -> bool:
    return getattr(result, "reason", None) == "blank_image"
