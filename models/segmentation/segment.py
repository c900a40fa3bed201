"""Segmentation inference: batched forward passes with test-time flips; heads measured on the logits' own grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from models.errors import MeasurementError
from models.geometry.biometry import Biometry, hc_on_grid, measure_head_on_grid
from models.segmentation.preprocess import contrast, logits_to_full_size, prepare_input

if TYPE_CHECKING:
    from models.segmentation.backends import ForwardPass

# Below this standard deviation (on a 0..1 scale) an image holds no echo pattern to segment.
MIN_CONTRAST = 0.01

# Test-time augmentation: identity, horizontal flip, vertical flip (dims of a (N, C, H, W) batch).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,))
# HCs measured on the flipped copies disagreeing by more than this fraction: flagged "unstable".
# About the +-3% intra-observer limits of agreement for HC (Sarris 2012).
MAX_TTA_SPREAD = 0.03
# Below this quality there is no head worth reviewing (noise, a cardiac view): a failure, not a number.
MIN_QUALITY = 0.15


@dataclass(frozen=True)
class Segmentation:
    """Skull logits at the network's resolution for an image of ``image_shape``: the mean over flips,
    and each flip's own map (empty without flips)."""

    logits: np.ndarray
    members: tuple[np.ndarray, ...]
    image_shape: tuple[int, int]

    @property
    def prob(self) -> np.ndarray:
        """The mean's skull probability at the image's own size (bilinear logits, then sigmoid)."""
        return logits_to_full_size(torch.from_numpy(self.logits)[None], self.image_shape)

    def measure(self, spacing_mm: tuple[float, float]) -> Biometry:
        """The head measured on the mean (``measure_head_on_grid``), with the flips' agreement."""
        bio = measure_head_on_grid(self.logits, *spacing_mm, self.image_shape)
        return with_agreement(bio, [member_hc(m, spacing_mm, self.image_shape) for m in self.members])


def member_hc(logits: np.ndarray, spacing_mm: tuple[float, float], image_shape: tuple[int, int]) -> float:
    """HC (mm) measured on one flip's logits; ``inf`` when no head can be measured on it."""
    try:
        return hc_on_grid(logits, *spacing_mm, image_shape)
    except MeasurementError:
        return float("inf")


@torch.inference_mode()
def predict_member_logits(net: nn.Module | ForwardPass, batch: torch.Tensor,
                          flips: Sequence[tuple[int, ...]] = TTA_FLIPS) -> torch.Tensor:
    """Logits of each flipped copy of a (N, 1, H, W) batch, flipped back: (F, N, 1, H, W).

    ``net`` is the torch network or a ``models.segmentation.backends.ForwardPass``; one with ``stack_flips``
    (an exported model) runs all flipped copies as one batch of F x N.
    """
    if getattr(net, "stack_flips", False) and batch.device.type == "cpu":
        # An exported model on CPU takes NumPy: flip, stack and flip back there (torch's ops cost 2 ms more).
        x = batch.numpy()
        stacked = np.concatenate([np.flip(x, dims) if dims else x for dims in flips])
        y = net(stacked).numpy()
        n = len(batch)
        return torch.from_numpy(np.stack([np.flip(y[k * n:(k + 1) * n], dims) if dims else y[k * n:(k + 1) * n]
                                          for k, dims in enumerate(flips)]))
    flipped = [torch.flip(batch, dims) if dims else batch for dims in flips]
    if getattr(net, "stack_flips", False):
        outputs = net(torch.cat(flipped)).split(len(batch))
    else:
        outputs = [net(x) for x in flipped]
    return torch.stack([torch.flip(y, dims) if dims else y for y, dims in zip(outputs, flips)])


def predict_logits(net: nn.Module | ForwardPass, batch: torch.Tensor,
                   flips: Sequence[tuple[int, ...]] = TTA_FLIPS) -> torch.Tensor:
    """Mean logits over the flipped copies of a (N, 1, H, W) batch."""
    return predict_member_logits(net, batch, flips).mean(dim=0)


def segment_with_members(
    net: nn.Module | ForwardPass, images: Sequence[np.ndarray], input_size: tuple[int, int],
    device: torch.device | str = "cpu", flips: Sequence[tuple[int, ...]] = TTA_FLIPS,
) -> list[Segmentation]:
    """Mean and per-flip logits of each image, from one batched forward pass per flip (or one in all)."""
    if not images:
        return []
    batch = torch.stack([prepare_input(img, input_size) for img in images]).to(device)
    members = predict_member_logits(net, batch, flips).float().cpu().numpy()[:, :, 0]
    mean = members.mean(axis=0)
    return [Segmentation(mean[i], tuple(m[i] for m in members) if len(flips) > 1 else (), img.shape[:2])
            for i, img in enumerate(images)]


def segment_images(
    net: nn.Module | ForwardPass, images: Sequence[np.ndarray], input_size: tuple[int, int],
    device: torch.device | str = "cpu", flips: Sequence[tuple[int, ...]] = TTA_FLIPS,
) -> list[np.ndarray]:
    """Skull probability maps (mean over flips) at each image's own size."""
    return [s.prob for s in segment_with_members(net, images, input_size, device, flips)]


def with_agreement(bio: Biometry, member_hcs: Sequence[float]) -> Biometry:
    """Add the spread of HC over the flipped copies (``member_hcs``: inf where one measured nothing);
    flag ``unstable`` beyond MAX_TTA_SPREAD.

    The spread also lowers the quality score: a head the network sees differently when the image
    is mirrored is a head to look at again.
    """
    if not member_hcs:
        return bio
    hcs = [bio.hc_mm, *member_hcs]
    spread = max(hcs) - min(hcs)
    relative = spread / bio.hc_mm
    flags = bio.flags + (("unstable",) if relative > MAX_TTA_SPREAD else ())
    agreement = max(0.0, 1.0 - relative / (4 * MAX_TTA_SPREAD))
    return dataclasses.replace(bio, tta_spread_mm=round(spread, 3) if np.isfinite(spread) else None,
                               quality=round(bio.quality * agreement, 4), flags=flags)


@dataclass
class SegmentedBatch:
    """A batch after its forward pass: the images, their spacings, the logits of those segmented (``todo``)
    and the results decided already (blank images)."""

    images: Sequence[np.ndarray]
    spacings_mm: Sequence[tuple[float, float]]
    todo: list[int]
    segmentations: list[Segmentation]
    results: list[Biometry | Exception | None]


def segment_batch(
    net: nn.Module | ForwardPass, images: Sequence[np.ndarray], spacings_mm: Sequence[tuple[float, float]],
    input_size: tuple[int, int], device: torch.device | str = "cpu",
) -> SegmentedBatch:
    """The first half of ``measure_images``: refuse blank images, run the network on the others.

    The network's part only (no contouring): a caller may run the next batch's ``segment_batch`` in
    another thread while it finishes this one (``finish_batch``).
    """
    results: list[Biometry | Exception | None] = [None] * len(images)
    todo = []
    for i, img in enumerate(images):
        if contrast(img) < MIN_CONTRAST:
            results[i] = MeasurementError("the image is blank (no contrast to segment)", reason="blank_image")
        else:
            todo.append(i)
    segmentations = segment_with_members(net, [images[i] for i in todo], input_size, device)
    return SegmentedBatch(images, spacings_mm, todo, segmentations, results)


def finish_batch(batch: SegmentedBatch) -> list[Biometry | Exception]:
    """The second half of ``measure_images``: measure each segmented head (a head-plane gate, if any, is
    applied after this by ``models.plane.gating``)."""
    results = list(batch.results)
    for i, seg in zip(batch.todo, batch.segmentations):
        try:
            bio = seg.measure(batch.spacings_mm[i])
            if bio.quality < MIN_QUALITY:
                raise MeasurementError(f"no fetal head found with confidence (quality {bio.quality:.2f} < "
                                       f"{MIN_QUALITY})", reason="no_head_found")
            results[i] = bio
        except Exception as exc:  # noqa: BLE001 - returned per image, raised by the caller
            results[i] = exc
    return [r for r in results if r is not None]


def measure_images(
    net: nn.Module | ForwardPass, images: Sequence[np.ndarray], spacings_mm: Sequence[tuple[float, float]],
    input_size: tuple[int, int], device: torch.device | str = "cpu",
) -> list[Biometry | Exception]:
    """Segment and measure a batch; each item is a Biometry or the error that image raised.

    Blank images (no contrast) are refused before the network sees them. With a head-plane gate:
    ``models.plane.gating.measure_gated``.
    """
    return finish_batch(segment_batch(net, images, spacings_mm, input_size, device))
