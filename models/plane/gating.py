"""The plane decision applied to a measured batch: the gate's verdicts, SonoNet-16's answers (when a classifier
is given) and the heads measured, joined by ``models.plane.decision``. A refused image becomes ``NotHeadPlane``;
a measured one carries the gate's probability as ``head_plane_score`` and, when the evidence is uncertain, the
flag ``plane_uncertain`` (needs_review)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from models.errors import NotHeadPlane
from models.geometry.biometry import Biometry
from models.plane.decision import (
    EARLY_FLOOR,
    SURE,
    PlaneDecision,
    PlaneEvidence,
    PlaneOutcome,
    PlanePolicy,
    decide,
)
from models.plane.sononet import PlaneClassifier, PlaneProbabilities
from models.plane.verdict import HeadPlaneGate
from models.segmentation.segment import SegmentedBatch, finish_batch, segment_batch

if TYPE_CHECKING:
    from models.segmentation.backends import ForwardPass

PLANE_UNCERTAIN = "plane_uncertain"  # the flag (and the row's reason) of an image whose plane is uncertain


@dataclass(frozen=True)
class PlaneJudgement:
    """What the plane evidence said of one image: SonoNet-16's answer (None: no classifier) and the decision
    (None: no gate, nothing decided)."""

    plane: PlaneProbabilities | None
    decision: PlaneDecision | None


def policy_for(threshold: float) -> PlanePolicy:
    """The plane policy around a gate's operating point (its own, or ``FETALHC_HEAD_PLANE_THRESHOLD``)."""
    return PlanePolicy(threshold, sure=max(SURE, threshold), early_floor=min(EARLY_FLOOR, threshold))


def judge(gate: HeadPlaneGate | None, batch: SegmentedBatch, results: list[Biometry | Exception],
          classifier: PlaneClassifier | None = None,
          ) -> tuple[list[Biometry | Exception], list[PlaneJudgement | None]]:
    """``results`` (``finish_batch``'s, one per image) after the plane decision on the segmented images (``todo``),
    and each image's judgement (None for a blank image, which nothing looks at).

    Without a gate nothing is decided (results unchanged) but SonoNet-16 still labels each image.
    """
    results = list(results)
    judgements: list[PlaneJudgement | None] = [None] * len(results)
    if not batch.todo or (gate is None and classifier is None):
        return results, judgements
    images = [batch.images[i] for i in batch.todo]
    planes: Sequence[PlaneProbabilities | None] = classifier.classify(images) if classifier else [None] * len(images)
    if gate is None:
        for i, plane in zip(batch.todo, planes):
            judgements[i] = PlaneJudgement(plane, None)
        return results, judgements
    ellipses = [r.ellipse_px if isinstance(r, Biometry) else None for r in (results[i] for i in batch.todo)]
    for i, verdict, plane in zip(batch.todo, gate.verdicts(images, ellipses), planes):
        result = results[i]
        bio = result if isinstance(result, Biometry) else None
        evidence = PlaneEvidence(verdict.probability, plane, bio.hc_mm if bio else None, bio.quality if bio else None)
        decision = decide(evidence, policy_for(verdict.threshold))
        judgements[i] = PlaneJudgement(plane, decision)
        if decision.outcome is PlaneOutcome.NOT_HEAD:
            results[i] = NotHeadPlane(f"not a fetal head biometry plane ({decision.why})", score=verdict.probability,
                                      threshold=verdict.threshold, why=decision.why)
        elif bio is not None:
            flags = bio.flags + ((PLANE_UNCERTAIN,) if decision.outcome is PlaneOutcome.UNCERTAIN else ())
            results[i] = dataclasses.replace(bio, head_plane_score=round(verdict.probability, 4), flags=flags)
    return results, judgements


def finish_judged(batch: SegmentedBatch, gate: HeadPlaneGate | None = None, classifier: PlaneClassifier | None = None,
                  ) -> tuple[list[Biometry | Exception], list[PlaneJudgement | None]]:
    """``finish_batch``, then the plane decision (``judge``)."""
    return judge(gate, batch, finish_batch(batch), classifier)


def finish_gated(batch: SegmentedBatch, gate: HeadPlaneGate | None = None,
                 classifier: PlaneClassifier | None = None) -> list[Biometry | Exception]:
    """``finish_judged``'s results (without a gate or classifier, ``finish_batch`` alone)."""
    return finish_judged(batch, gate, classifier)[0]


def measure_gated(
    net: nn.Module | ForwardPass, images: Sequence[np.ndarray], spacings_mm: Sequence[tuple[float, float]],
    input_size: tuple[int, int], device: torch.device | str = "cpu", gate: HeadPlaneGate | None = None,
    classifier: PlaneClassifier | None = None,
) -> list[Biometry | Exception]:
    """``measure_images`` with the plane decision: each item is a Biometry (with ``head_plane_score``, flagged
    ``plane_uncertain`` where the evidence is uncertain) or the error that image raised, ``NotHeadPlane`` for
    one that is not a head plane."""
    return finish_gated(segment_batch(net, images, spacings_mm, input_size, device), gate, classifier)
