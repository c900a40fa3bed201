"""One plane decision from all the evidence: a head plane (measure it), not a head plane, or uncertain (review).

The evidence of one image: the head-plane gate's probability (CNN + skull echo, ``models.plane.head_plane``),
SonoNet-16's 14 probabilities when ``FETALHC_PLANE_CLASSIFIER`` names its file (``models.plane.sononet``),
and the head the segmentation network measured (its HC and quality; None where none was found). The rule
(``decide``; its figures per source in ``models/weights/MODEL_CARD.md``, "Plane decision"):

Gate alone (no classifier file):
  gate >= SURE (0.80)            head plane
  threshold <= gate < SURE       uncertain: real non-head planes scored 0.28-0.72 in issue 19's trial
  gate < threshold               not a head plane, except a small, well-fitted head (HC below 120 mm,
                                 quality >= 0.6) with gate >= EARLY_FLOOR (0.10): uncertain (early heads
                                 of 12-16 weeks have the faintest skull echo)

With SonoNet-16, by its most probable class:
  a brain plane                  head plane when the gate passes (>= its threshold), else uncertain: a brain
                                 plane is never refused
  anything else, on a head       SonoNet-16 was trained on 18-22 week scans. On HC18 heads of 120-280 mm it
  measured below 120 mm, or      names a brain plane 89-100% of the time; on smaller heads only half of the
  background on one above 280    time (the rest background, lips, kidneys, abdomen, often with confidence),
                                 on bigger ones 60-80% (the rest mostly background). There its answer is no
                                 evidence: the gate decides at its own threshold (with the early-head floor)
  background (120-280 mm)        uncertain when the gate passes, else not a head plane
  another standard plane         not a head plane, except: uncertain when the gate is sure (>= SURE), or
  (120 mm and up)                when SonoNet-16 is not (its class below OTHER_SURE, 0.80) and the gate passes
  no head measured               not a head plane unless SonoNet-16 names a brain plane (then the
                                 segmentation's failure stands)

Thresholds were chosen on HC18 validation heads, other-heads, us-negatives and made negatives
(``fetalhc eval-gate``), never on SonoNet's 13 example screens (checked only).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from models.plane.sononet import HEAD_CLASSES, PlaneClass, PlaneProbabilities

SURE = 0.80  # gate probability from which the gate alone takes an image for a head plane
EARLY_FLOOR = 0.10  # below the gate's threshold, a small well-fitted head above this is reviewed, not refused
EARLY_HC_MM = 120.0  # "small": below this HC (12-16 weeks) a head with a faint skull echo is kept for review
EARLY_MIN_QUALITY = 0.6  # the segmentation's quality a small head needs to be kept for review (its low_confidence line)
TRUSTED_HC_MM = (120.0, 280.0)  # head sizes (HC, mm) where SonoNet-16's answer counts (background: up to 280 only)
OTHER_SURE = 0.80  # SonoNet-16's probability of another standard plane from which it refuses on its own


class PlaneOutcome(StrEnum):
    """What the decision makes of an image."""

    HEAD = "head"  # a head biometry plane: stored as the measurement says (measured, or needs_review by its flags)
    UNCERTAIN = "uncertain"  # needs_review, reason plane_uncertain
    NOT_HEAD = "not_head"  # set aside: no HC


@dataclass(frozen=True)
class PlaneEvidence:
    """One image's evidence: the gate's probability, SonoNet-16's answer (None: no classifier) and the head
    measured on it (``hc_mm`` and ``quality`` None where the segmentation found none)."""

    gate: float
    plane: PlaneProbabilities | None = None
    hc_mm: float | None = None
    quality: float | None = None


@dataclass(frozen=True)
class PlaneDecision:
    """The outcome and why, in words for the row's ``detail``."""

    outcome: PlaneOutcome
    why: str


@dataclass(frozen=True)
class PlanePolicy:
    """The thresholds of ``decide``; ``threshold`` is the gate's own operating point (or its override)."""

    threshold: float
    sure: float = SURE
    early_floor: float = EARLY_FLOOR
    early_hc_mm: float = EARLY_HC_MM
    early_min_quality: float = EARLY_MIN_QUALITY
    trusted_hc_mm: tuple[float, float] = TRUSTED_HC_MM
    other_sure: float = OTHER_SURE

    def __post_init__(self) -> None:
        if not 0.0 <= self.early_floor <= self.threshold <= self.sure <= 1.0:
            raise ValueError(f"plane policy needs 0 <= early floor {self.early_floor} <= gate threshold "
                             f"{self.threshold} <= sure {self.sure} <= 1")


def _small_head(e: PlaneEvidence, p: PlanePolicy) -> bool:
    return (e.hc_mm is not None and e.hc_mm < p.early_hc_mm and e.quality is not None
            and e.quality >= p.early_min_quality and e.gate >= p.early_floor)


def _gate_alone(e: PlaneEvidence, p: PlanePolicy, sure: float) -> PlaneDecision:
    g = f"head-plane score {e.gate:.3f}"
    if e.gate >= sure:
        return PlaneDecision(PlaneOutcome.HEAD, f"{g} >= {sure:.3f}")
    if e.gate >= p.threshold:
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{g} between {p.threshold:.3f} and {sure:.3f}")
    if _small_head(e, p):
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{g} < {p.threshold:.3f} on a small head "
                                                     f"(HC {e.hc_mm:.0f} mm): an early head's faint skull?")
    return PlaneDecision(PlaneOutcome.NOT_HEAD, f"{g} < {p.threshold:.3f}")


def decide(e: PlaneEvidence, p: PlanePolicy) -> PlaneDecision:
    """The plane decision for one image (see the module's docstring)."""
    if e.plane is None:
        return _gate_alone(e, p, p.sure)
    label, prob = e.plane.label, e.plane.probability
    says = f"SonoNet-16 says {label.value} ({prob:.2f}), head-plane score {e.gate:.3f}"
    if label in HEAD_CLASSES:
        if e.gate >= p.threshold:
            return PlaneDecision(PlaneOutcome.HEAD, says)
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says} < {p.threshold:.3f}")
    if e.hc_mm is None:
        return PlaneDecision(PlaneOutcome.NOT_HEAD, f"{says}; no head found")
    if e.hc_mm < p.trusted_hc_mm[0] or (label is PlaneClass.BACKGROUND and e.hc_mm > p.trusted_hc_mm[1]):
        # A head of a size SonoNet-16 was not trained on: on small heads it names background, lips, kidneys or
        # the abdomen as often as a brain plane, on big ones background. Its answer is no evidence there.
        decision = _gate_alone(e, p, p.threshold)
        return PlaneDecision(decision.outcome, f"{says}; HC {e.hc_mm:.0f} mm outside the "
                                               f"{p.trusted_hc_mm[0]:.0f}-{p.trusted_hc_mm[1]:.0f} mm it knows")
    if label is PlaneClass.BACKGROUND:
        if e.gate >= p.threshold:
            return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says}: they disagree")
        return PlaneDecision(PlaneOutcome.NOT_HEAD, says)
    if e.gate >= p.sure:
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says}: they disagree")
    if prob < p.other_sure and e.gate >= p.threshold:
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says}: neither is sure")
    return PlaneDecision(PlaneOutcome.NOT_HEAD, says)
