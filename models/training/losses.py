"""Training losses: DiceCE with extra cross-entropy weight where the HC is decided, at the skull's edge."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

# Width (network pixels) of the band around the label's edge that gets the extra weight.
EDGE_BAND_PX = 5


def edge_band(label: torch.Tensor, width: int = EDGE_BAND_PX) -> torch.Tensor:
    """Morphological gradient of a (N, 1, H, W) soft label: 1 within ``width`` px of its edge, 0 far away.

    Example:
        >>> y = torch.zeros(1, 1, 9, 9); y[..., 3:6, 3:6] = 1
        >>> band = edge_band(y, 3)
        >>> float(band[0, 0, 4, 4]), float(band[0, 0, 3, 3]), float(band[0, 0, 0, 0])
        (0.0, 1.0, 0.0)
    """
    pad = width // 2
    dilated = F.max_pool2d(label, width, stride=1, padding=pad)
    eroded = -F.max_pool2d(-label, width, stride=1, padding=pad)
    return (dilated - eroded).clamp(0, 1)


class EdgeWeightedDiceCELoss(nn.Module):
    """Dice + binary cross-entropy, the cross-entropy weighted ``1 + edge_weight`` near the label's edge.

    Interior and background pixels are easy; the ellipse (and so HC) depends only on where the
    0.5 level falls, so the edge band is where the loss should push. ``edge_weight=0`` is MONAI's
    ``DiceCELoss(sigmoid=True)``.
    """

    def __init__(self, edge_weight: float, width: int = EDGE_BAND_PX) -> None:
        super().__init__()
        self.edge_weight = edge_weight
        self.width = width
        self.dice = DiceLoss(sigmoid=True)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        weight = 1 + self.edge_weight * edge_band(label, self.width)
        ce = F.binary_cross_entropy_with_logits(logits.float(), label.float(), weight=weight.float())
        return self.dice(logits, label) + ce
