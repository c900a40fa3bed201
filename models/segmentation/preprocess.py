"""Turning a grey image of any size into the network's input tensor, and logits back to full size."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """Grey pixels as float32 in [0, 1]: integer images by their type's range, floats by their max."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    if np.issubdtype(image.dtype, np.integer):
        top = float(np.iinfo(image.dtype).max) if image.dtype == np.uint8 else float(max(image.max(), 1))
        return image.astype(np.float32) / top
    image = image.astype(np.float32)
    peak = float(image.max())
    return image / peak if peak > 0 else image


def contrast(image: np.ndarray) -> float:
    """Standard deviation of ``to_unit_float(image)`` (the blank-image test), without making the float copy."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    if image.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64) and image.size:
        _, std = cv2.meanStdDev(np.ascontiguousarray(image))
        if np.issubdtype(image.dtype, np.integer):
            top = 255.0 if image.dtype == np.uint8 else float(max(int(image.max()), 1))
        else:
            peak = float(image.max())
            top = peak if peak > 0 else 1.0
        return float(std[0, 0]) / top
    return float(to_unit_float(image).std())


def normalise(t: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per image (over the last two dimensions)."""
    mean = t.mean(dim=(-2, -1), keepdim=True)
    std = t.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return (t - mean) / std


def resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a (..., H, W) tensor to ``size`` (H, W)."""
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, *size)


def prepare_input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """A (1, H, W) normalised float tensor at the network size from a 2-D grey image."""
    t = torch.from_numpy(to_unit_float(image))[None]
    return normalise(resize(t, size))


def logits_to_full_size(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Sigmoid probability (rows, cols) at the original image size from (1, h, w) logits.

    Logits are upsampled before the sigmoid so the 0.5 level keeps sub-pixel precision.
    """
    up = F.interpolate(logits[None].float(), size=shape, mode="bilinear", align_corners=False)
    return torch.sigmoid(up)[0, 0].numpy()
