"""Segmentation and measurement of a batch where the network runs: frames on the device in, ``Biometry`` out.

The batched twin of ``segment.segment_batch`` + ``segment.finish_batch``: the frames (2-D uint8 tensors,
already on the network's device, e.g. decoded there from JPEG) are scaled, resized and normalised there,
run through the network with the test-time flips, and the mean and each flip are outlined and fitted
there (``models.geometry.batched``). What the host needs comes back in one (N, K) float64 copy
(``DeviceBatch.packed``), and the host forms each image's ``Biometry`` (or error) with the NumPy path's own
rules (``biometry.head_biometry``, ``segment.with_agreement``, MIN_QUALITY). On CPU torch the same code
runs (the tests compare it with the NumPy path on HC18 validation images and phantoms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import MeasurementError
from models.geometry.batched import FIT_ERRORS, FIT_OK, GridFits, measure_grid
from models.geometry.biometry import Biometry, head_biometry
from models.geometry.ellipse import Ellipse, ramanujan_perimeter
from models.segmentation.backends import ForwardPass
from models.segmentation.preprocess import normalise
from models.segmentation.segment import MIN_CONTRAST, MIN_QUALITY, TTA_FLIPS, predict_member_logits, with_agreement

# Columns of ``DeviceBatch.packed``: the contrast, then per map (mean, then each flip) its error code, the
# ellipse in mm (cx, cy, a, b, angle) and the fraction of inliers, then the mean's confidence and IoU.
_PER_MAP = 7


def unit_frames(frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each 2-D frame as float32 in [0, 1] on its device (``preprocess.to_unit_float``: uint8 by 255, other
    integers by their maximum, floats by their peak)."""
    out = []
    for f in frames:
        if f.ndim != 2:
            raise ValueError(f"expected a 2-D grey frame, got shape {tuple(f.shape)}")
        if f.dtype == torch.uint8:
            out.append(f.to(torch.float32) / 255.0)
        elif not f.is_floating_point():
            out.append(f.to(torch.float32) / f.max().clamp_min(1).to(torch.float32))
        else:
            peak = f.max().to(torch.float32)
            x = f.to(torch.float32)
            out.append(torch.where(peak > 0, x / torch.where(peak > 0, peak, 1.0), x))
    return out


def prepare_on_device(frames: Sequence[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's (N, 1, H, W) input (``preprocess.prepare_input`` of each frame) and each frame's contrast
    (``preprocess.contrast``: the standard deviation on the 0..1 scale), computed on the frames' device; frames
    of one shape are resized together."""
    unit = unit_frames(frames)
    device = unit[0].device
    batch = torch.empty((len(unit), 1, *size), dtype=torch.float32, device=device)
    contrast = torch.empty(len(unit), dtype=torch.float32, device=device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(unit):
        groups.setdefault(tuple(f.shape), []).append(i)
    for indices in groups.values():
        x = torch.stack([unit[i] for i in indices])[:, None]
        idx = torch.tensor(indices, device=device)
        contrast[idx] = x.std(dim=(-2, -1), correction=0)[:, 0]
        resized = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        batch[idx] = normalise(resized)
    return batch, contrast


@dataclass
class DeviceBatch:
    """A batch after its device work: each image's shape and spacing, the packed per-image numbers (still on the
    device, (N, K) float64), each image's ellipse in its pixels on the device (N, 5; for the gate) and whether
    its mean map has one."""

    shapes: list[tuple[int, int]]
    spacings_mm: list[tuple[float, float]]
    packed: torch.Tensor
    ellipse_px: torch.Tensor
    has_ellipse: torch.Tensor
    flips: int


@torch.inference_mode()
def segment_on_device(net: nn.Module | ForwardPass, frames: Sequence[torch.Tensor],
                      spacings_mm: Sequence[tuple[float, float]], input_size: tuple[int, int],
                      flips: Sequence[tuple[int, ...]] = TTA_FLIPS, native_components: bool | None = None,
                      ) -> DeviceBatch:
    """Everything of ``segment_batch`` + ``finish_batch`` that runs on the frames' device, for 2-D frames there."""
    n = len(frames)
    device = frames[0].device
    batch, contrast = prepare_on_device(frames, input_size)
    members = predict_member_logits(net, batch, flips).float()[:, :, 0]  # (F, N, h, w)
    mean = members.mean(dim=0)
    maps = torch.cat([mean[None], members]) if len(flips) > 1 else mean[None]  # (1 + F, N, h, w)
    k = maps.shape[0]
    shapes = [(int(f.shape[0]), int(f.shape[1])) for f in frames]
    shape_t = torch.tensor(shapes, dtype=torch.float64).repeat(k, 1)
    spacing_t = torch.tensor([tuple(map(float, s)) for s in spacings_mm], dtype=torch.float64).repeat(k, 1)
    quality = torch.zeros(k * n, dtype=torch.bool)
    quality[:n] = True
    fits: GridFits = measure_grid(maps.reshape(k * n, *maps.shape[2:]).contiguous(), shape_t, spacing_t, quality,
                                  native_components)
    per_map = torch.cat([fits.error.to(torch.float64)[:, None], fits.ellipse_mm, fits.inliers[:, None]], dim=1)
    per_image = per_map.view(k, n, _PER_MAP).permute(1, 0, 2).reshape(n, k * _PER_MAP)
    packed = torch.cat([contrast.to(torch.float64)[:, None], per_image, fits.confidence[:n, None],
                        fits.iou[:n, None]], dim=1)
    has = fits.error[:n] == FIT_OK
    return DeviceBatch(shapes, [tuple(map(float, s)) for s in spacings_mm], packed, fits.ellipse_px[:n], has,
                       k - 1)


def _fit_error(code: int) -> MeasurementError:
    message, reason = FIT_ERRORS[code]
    return MeasurementError(message, reason=reason)


def _ellipse(values: np.ndarray) -> Ellipse:
    cx, cy, a, b, angle = (float(v) for v in values)
    return Ellipse.make(cx, cy, a, b, angle)


def finish_on_host(batch: DeviceBatch, packed: np.ndarray) -> list[Biometry | Exception]:
    """``finish_batch``'s results from the copied ``packed`` rows: a Biometry (with the flips' agreement) or the
    error of each image (``blank_image``, a fit's, ``no_head_found`` below MIN_QUALITY)."""
    results: list[Biometry | Exception] = []
    k = batch.flips + 1
    for i, row in enumerate(packed):
        if row[0] < MIN_CONTRAST:
            results.append(MeasurementError("the image is blank (no contrast to segment)", reason="blank_image"))
            continue
        maps = row[1:1 + k * _PER_MAP].reshape(k, _PER_MAP)
        confidence, iou = float(row[1 + k * _PER_MAP]), float(row[2 + k * _PER_MAP])
        try:
            if int(maps[0, 0]) != FIT_OK:
                raise _fit_error(int(maps[0, 0]))
            sx, sy = batch.spacings_mm[i]
            ellipse_mm = _ellipse(maps[0, 1:6])
            bio = head_biometry(ellipse_mm, ellipse_mm.scaled(1 / sx, 1 / sy), confidence, iou, float(maps[0, 6]),
                                batch.shapes[i])
            members = [_member_hc(m) for m in maps[1:]]
            bio = with_agreement(bio, members) if batch.flips > 1 else bio
            if bio.quality < MIN_QUALITY:
                raise MeasurementError(f"no fetal head found with confidence (quality {bio.quality:.2f} < "
                                       f"{MIN_QUALITY})", reason="no_head_found")
            results.append(bio)
        except Exception as exc:  # noqa: BLE001 - returned per image, as finish_batch does
            results.append(exc)
    return results


def _member_hc(values: np.ndarray) -> float:
    """A flip's HC (``segment.member_hc``): inf where nothing could be measured on it."""
    if int(values[0]) != FIT_OK or not np.all(np.isfinite(values[1:6])) or min(values[3], values[4]) <= 0:
        return float("inf")
    a, b = float(values[3]), float(values[4])
    return ramanujan_perimeter(max(a, b), min(a, b))
