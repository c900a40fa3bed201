"""The edge-weighted DiceCE loss: the band sits on the label's edge, weight 0 is MONAI's DiceCE."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

from models.geometry.ellipse import Ellipse
from models.training.losses import EdgeWeightedDiceCELoss, edge_band


def _ellipse_label(shape: tuple[int, int] = (48, 64)) -> torch.Tensor:
    mask = Ellipse.make(32, 24, 20, 14, 0.3).filled_mask(shape).astype("float32")
    return torch.from_numpy(mask)[None, None]


def test_edge_band_covers_the_edge_and_nothing_far_from_it() -> None:
    label = _ellipse_label()
    band = edge_band(label, 5)[0, 0]
    assert band[24, 32] == 0  # the centre
    assert band[0, 0] == 0  # far background
    assert band[24, 32 + 20] == 1 and band[24, 32 - 20] == 1  # on the outline's ends (angle 0.3: near)
    assert 0.05 < float(band.mean()) < 0.4


def test_zero_edge_weight_is_monai_dice_ce_and_edge_errors_cost_more() -> None:
    torch.manual_seed(0)
    label = _ellipse_label()
    logits = torch.randn_like(label)
    plain = DiceCELoss(sigmoid=True)(logits, label)
    assert torch.allclose(EdgeWeightedDiceCELoss(0.0)(logits, label), plain, atol=1e-6)

    # The same number of wrong pixels costs more on the edge than deep in the background.
    good = label * 12 - 6  # confident and right everywhere
    band = edge_band(label)[0, 0] > 0
    wrong_edge, wrong_far = good.clone(), good.clone()
    edge_idx = band.nonzero()[:40]
    far_idx = (~band & (label[0, 0] == 0)).nonzero()[:40]
    wrong_edge[0, 0, edge_idx[:, 0], edge_idx[:, 1]] *= -1
    wrong_far[0, 0, far_idx[:, 0], far_idx[:, 1]] *= -1
    loss = EdgeWeightedDiceCELoss(4.0)
    plain_edge = DiceCELoss(sigmoid=True)(wrong_edge, label)
    assert loss(wrong_edge, label) > loss(wrong_far, label)
    assert loss(wrong_edge, label) > plain_edge  # the edge weight adds to the plain loss
