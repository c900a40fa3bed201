"""Segmentation networks selectable by name, all from MONAI, one output channel (skull mask logit)."""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch
from torch import nn


class Architecture(str, Enum):
    """Networks ``fetalhc train --arch`` accepts."""

    UNET = "unet"  # MONAI residual UNet
    ATTENTION_UNET = "attention-unet"  # MONAI AttentionUnet (Oktay 2018)
    FLEXIBLE_UNET = "flexible-unet"  # MONAI FlexibleUNet, EfficientNet-B0 encoder, no pretraining


BATCH_NORM_MOMENTUM = 0.1  # PyTorch's default

DEFAULT_KWARGS: dict[Architecture, dict[str, Any]] = {
    Architecture.UNET: {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
    Architecture.ATTENTION_UNET: {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2]},
    Architecture.FLEXIBLE_UNET: {"backbone": "efficientnet-b0"},
}


def parse_architecture(name: str) -> Architecture:
    """The architecture called ``name``; the error lists the valid choices."""
    try:
        return Architecture(name)
    except ValueError:
        valid = ", ".join(a.value for a in Architecture)
        raise ValueError(f"unknown architecture {name!r}; choose one of: {valid}") from None


def build_network(arch: str | Architecture, **overrides: Any) -> nn.Module:
    """A fresh 2-D network with one input (grey) and one output (logit) channel.

    Example:
        >>> net = build_network("unet")
        >>> net(torch.zeros(1, 1, 64, 96)).shape
        torch.Size([1, 1, 64, 96])
    """
    arch = parse_architecture(arch) if isinstance(arch, str) else arch
    kwargs = {**DEFAULT_KWARGS[arch], **overrides}
    if arch is Architecture.UNET:
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=1, out_channels=1, **kwargs)
    if arch is Architecture.ATTENTION_UNET:
        from monai.networks.nets import AttentionUnet

        return AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, **kwargs)
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=1, out_channels=1, spatial_dims=2, pretrained=False, **kwargs)
    # EfficientNet keeps TensorFlow's batch-norm momentum (0.01): trained from scratch for a few
    # thousand steps its running statistics lag far behind and eval-mode output collapses.
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = BATCH_NORM_MOMENTUM
    return net


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda`` as asked (error if absent)."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("FETALHC_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    if preference not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {preference!r}; choose one of: auto, cpu, cuda")
    return torch.device(preference)
