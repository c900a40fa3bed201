"""The head-plane gate applied to a measured batch: a refused image becomes ``NotHeadPlane``, a measured one
carries the gate's probability as ``head_plane_score``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from models.errors import NotHeadPlane
from models.geometry.biometry import Biometry
from models.plane.verdict import HeadPlaneGate
from models.segmentation.segment import SegmentedBatch, finish_batch, segment_batch

if TYPE_CHECKING:
    from models.segmentation.backends import ForwardPass


def apply_gate(gate: HeadPlaneGate, batch: SegmentedBatch,
               results: list[Biometry | Exception]) -> list[Biometry | Exception]:
    """``results`` (``finish_batch``'s, one per image) with the gate's verdicts on the segmented images (``todo``):
    each refused one replaced by ``NotHeadPlane`` whether or not an ellipse was found; blank images left as they are."""
    results = list(results)
    if not batch.todo:
        return results
    ellipses = [r.ellipse_px if isinstance(r, Biometry) else None for r in (results[i] for i in batch.todo)]
    verdicts = gate.verdicts([batch.images[i] for i in batch.todo], ellipses)
    for i, verdict in zip(batch.todo, verdicts):
        result = results[i]
        if not verdict.is_head:
            results[i] = NotHeadPlane(f"not a fetal head biometry plane (head-plane score {verdict.probability:.3f} "
                                      f"< {verdict.threshold:.3f})", score=verdict.probability,
                                      threshold=verdict.threshold)
        elif isinstance(result, Biometry):
            results[i] = dataclasses.replace(result, head_plane_score=round(verdict.probability, 4))
    return results


def finish_gated(batch: SegmentedBatch, gate: HeadPlaneGate | None = None) -> list[Biometry | Exception]:
    """``finish_batch``, then the gate's verdicts (``apply_gate``); without a gate, ``finish_batch`` alone."""
    results = finish_batch(batch)
    return results if gate is None else apply_gate(gate, batch, results)


def measure_gated(
    net: nn.Module | ForwardPass, images: Sequence[np.ndarray], spacings_mm: Sequence[tuple[float, float]],
    input_size: tuple[int, int], device: torch.device | str = "cpu", gate: HeadPlaneGate | None = None,
) -> list[Biometry | Exception]:
    """``measure_images`` with a head-plane gate: each item is a Biometry (with ``head_plane_score``) or the error
    that image raised, ``NotHeadPlane`` for one the gate refuses."""
    return finish_gated(segment_batch(net, images, spacings_mm, input_size, device), gate)
