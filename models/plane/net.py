"""The head-plane classifier network: a small MONAI CNN on the whole image, downsized and letterboxed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import Classifier
from torch import nn

from models.segmentation.preprocess import normalise, to_unit_float

INPUT_SIZE = (144, 208)  # (rows, cols): about the 1.45 aspect of most B-mode exports
NET_KWARGS: dict[str, Any] = {"channels": (8, 16, 32, 64, 96), "strides": (2, 2, 2, 2, 2), "num_res_units": 1}


def build_plane_net(input_size: tuple[int, int] = INPUT_SIZE, **kwargs: Any) -> nn.Module:
    """A MONAI ``Classifier`` with one output (the logit of "head plane")."""
    opts = {**NET_KWARGS, **kwargs}
    return Classifier(in_shape=(1, *input_size), classes=1, channels=opts["channels"], strides=opts["strides"],
                      num_res_units=opts["num_res_units"], last_act=None)


def letterbox(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    """A (1, rows, cols) float tensor: the grey image scaled to fit ``size`` keeping its aspect, padded with 0.

    Shapes stay shapes (a round head stays round), whatever the export's size.
    """
    t = torch.from_numpy(to_unit_float(image))[None, None]
    h, w = image.shape
    scale = min(size[0] / h, size[1] / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    out = torch.zeros((1, 1, *size))
    r0, c0 = (size[0] - nh) // 2, (size[1] - nw) // 2
    out[..., r0:r0 + nh, c0:c0 + nw] = t
    return out[0]


@torch.inference_mode()
def plane_logits(net: nn.Module | Callable[[torch.Tensor], torch.Tensor], images: Sequence[np.ndarray],
                 size: tuple[int, int] = INPUT_SIZE, device: torch.device | str = "cpu") -> np.ndarray:
    """The network's head-plane logit for each image, in one batch (``net``: the module or a backend's forward)."""
    if not images:
        return np.zeros(0, np.float32)
    batch = normalise(torch.stack([letterbox(img, size) for img in images])).to(device)
    return net(batch).float().cpu().numpy().reshape(-1)
