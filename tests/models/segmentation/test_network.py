"""Networks by name: shapes, the error that lists the choices, batch-norm settings that train from scratch."""

from __future__ import annotations

import pytest
import torch

from models.segmentation.network import (
    BATCH_NORM_MOMENTUM,
    Architecture,
    build_network,
    parse_architecture,
    pick_device,
)


@pytest.mark.parametrize("arch", [a.value for a in Architecture])
def test_every_architecture_maps_an_image_to_one_logit_channel(arch: str) -> None:
    net = build_network(arch).eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 1, 64, 96)).shape == (2, 1, 64, 96)


def test_unknown_architecture_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unet, attention-unet, flexible-unet"):
        parse_architecture("resnet")


def test_flexible_unet_batch_norm_momentum_is_pytorchs_default() -> None:
    # EfficientNet's TensorFlow momentum (0.01) leaves eval-mode statistics far behind in short runs.
    momenta = {m.momentum for m in build_network("flexible-unet").modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert momenta == {BATCH_NORM_MOMENTUM}


def test_pick_device() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        pick_device("tpu")
