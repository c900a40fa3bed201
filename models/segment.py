"""Segmentation inference: batched forward passes with test-time flips, probabilities at full size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from models.biometry import Biometry, measure_head
from models.errors import MeasurementError
from models.preprocess import logits_to_full_size, prepare_input, to_unit_float

# Below this standard deviation (on a 0..1 scale) an image holds no echo pattern to segment.
MIN_CONTRAST = 0.01

# Test-time augmentation: identity, horizontal flip, vertical flip (dims of a (N, C, H, W) batch).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,))


@torch.inference_mode()
def predict_logits(net: nn.Module, batch: torch.Tensor, flips: Sequence[tuple[int, ...]] = TTA_FLIPS) -> torch.Tensor:
    """Mean logits over the flipped copies of a (N, 1, H, W) batch."""
    total = torch.zeros((batch.shape[0], 1, *batch.shape[-2:]), device=batch.device)
    for dims in flips:
        x = torch.flip(batch, dims) if dims else batch
        y = net(x)
        total += torch.flip(y, dims) if dims else y
    return total / max(len(flips), 1)


def segment_images(
    net: nn.Module, images: Sequence[np.ndarray], input_size: tuple[int, int],
    device: torch.device | str = "cpu", flips: Sequence[tuple[int, ...]] = TTA_FLIPS,
) -> list[np.ndarray]:
    """Skull probability maps at each image's own size, from one batched forward pass."""
    if not images:
        return []
    batch = torch.stack([prepare_input(img, input_size) for img in images]).to(device)
    logits = predict_logits(net, batch, flips).cpu()
    return [logits_to_full_size(logits[i], img.shape[:2]) for i, img in enumerate(images)]


def measure_images(
    net: nn.Module, images: Sequence[np.ndarray], spacings_mm: Sequence[tuple[float, float]],
    input_size: tuple[int, int], device: torch.device | str = "cpu",
) -> list[Biometry | Exception]:
    """Segment and measure a batch; each item is a Biometry or the error that image raised.

    Blank images (no contrast) are refused before the network sees them.
    """
    results: list[Biometry | Exception | None] = [None] * len(images)
    todo = []
    for i, img in enumerate(images):
        if float(to_unit_float(img).std()) < MIN_CONTRAST:
            results[i] = MeasurementError("the image is blank (no contrast to segment)", reason="blank_image")
        else:
            todo.append(i)
    probs = segment_images(net, [images[i] for i in todo], input_size, device)
    for i, prob in zip(todo, probs):
        sx, sy = spacings_mm[i]
        try:
            results[i] = measure_head(prob, sx, sy)
        except Exception as exc:  # noqa: BLE001 - returned per image, raised by the caller
            results[i] = exc
    return [r for r in results if r is not None]
