"""One plane decision from all the evidence: a head plane (measure it), not a head plane, or uncertain (review).

The evidence of one image: the head-plane gate's probability (CNN + skull echo, ``models.plane.head_plane``),
SonoNet-16's 14 probabilities when ``FETALHC_PLANE_CLASSIFIER`` names its file (``models.plane.sononet``),
and the head the segmentation network measured (its HC and quality; None where none was found). The rule
(``decide``; its figures per source in ``models/weights/MODEL_CARD.md``, "Plane decision"):

Gate alone (no classifier file):
  gate >= SURE (0.80)            head plane
  threshold <= gate < SURE       uncertain: real non-head planes scored 0.28-0.72 in issue 19's trial
  gate < threshold               not a head plane, except uncertain with gate >= EARLY_FLOOR (0.10) on
                                 a small, well-fitted head (HC below 120 mm, quality >= 0.6: early heads of
                                 12-16 weeks have the faintest skull echo) or a late, well-fitted one (HC
                                 above 280 mm, quality >= LATE_MIN_QUALITY 0.85)

With SonoNet-16, by its most probable class:
  a brain plane                  head plane when the gate passes (>= its threshold), else uncertain: a brain
                                 plane is never refused
  no head measured               any other class: not a head plane (with a brain plane the segmentation's
                                 failure stands)
  any other class on a head      SonoNet-16 was trained on 18-22 week scans; on HC18 heads under 120 mm it
  measured below 120 mm          names a brain plane only half of the time (the rest background, lips,
                                 kidneys, abdomen). The gate decides at its own threshold (with the
                                 early-head floor), except that another standard plane (not background)
                                 named with >= OTHER_SURE (0.80) asks the gate to be sure: head plane only
                                 with gate >= SURE, uncertain from its threshold to SURE
  background on a head above     head plane with gate >= SURE, or with gate >= threshold when SonoNet-16
  280 mm                         gives the brain planes >= BRAIN_HINT (0.15) together; else uncertain from
                                 the threshold (a term head it has not seen, or a thorax, cervix or other
                                 anatomy it has no class for), or below it on a late well-fitted head with
                                 gate >= EARLY_FLOOR; else not a head plane
  background (120-280 mm)        head plane with gate >= SURE (as the gate alone: background is "none of
                                 SonoNet-16's planes", not a plane it names), uncertain when the gate passes,
                                 else not a head plane
  another standard plane         not a head plane, except: uncertain when the gate is sure (>= SURE), or
  (120 mm and up)                when SonoNet-16 is not (its class below OTHER_SURE, 0.80) and the gate passes

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
LATE_MIN_QUALITY = 0.85  # below the gate's threshold, a head over 280 mm fitted this well is reviewed, not refused
BRAIN_HINT = 0.15  # SonoNet-16's brain-plane probability (Cb. + Tv.) that lets a late head it calls background pass


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
    late_min_quality: float = LATE_MIN_QUALITY
    brain_hint: float = BRAIN_HINT

    def __post_init__(self) -> None:
        if not 0.0 <= self.early_floor <= self.threshold <= self.sure <= 1.0:
            raise ValueError(f"plane policy needs 0 <= early floor {self.early_floor} <= gate threshold "
                             f"{self.threshold} <= sure {self.sure} <= 1")


def _small_head(e: PlaneEvidence, p: PlanePolicy) -> bool:
    return (e.hc_mm is not None and e.hc_mm < p.early_hc_mm and e.quality is not None
            and e.quality >= p.early_min_quality and e.gate >= p.early_floor)


def _late_head(e: PlaneEvidence, p: PlanePolicy) -> bool:
    return (e.hc_mm is not None and e.hc_mm > p.trusted_hc_mm[1] and e.quality is not None
            and e.quality >= p.late_min_quality and e.gate >= p.early_floor)


def _gate_alone(e: PlaneEvidence, p: PlanePolicy, sure: float) -> PlaneDecision:
    g = f"head-plane score {e.gate:.3f}"
    if e.gate >= sure:
        return PlaneDecision(PlaneOutcome.HEAD, f"{g} >= {sure:.3f}")
    if e.gate >= p.threshold:
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{g} between {p.threshold:.3f} and {sure:.3f}")
    if _small_head(e, p):
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{g} < {p.threshold:.3f} on a small head "
                                                     f"(HC {e.hc_mm:.0f} mm): an early head's faint skull?")
    if _late_head(e, p):
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{g} < {p.threshold:.3f} on a well-fitted late head "
                                                     f"(HC {e.hc_mm:.0f} mm, quality {e.quality:.2f})")
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
    outside = f"{says}; HC {e.hc_mm:.0f} mm outside the {p.trusted_hc_mm[0]:.0f}-{p.trusted_hc_mm[1]:.0f} mm it knows"
    if e.hc_mm < p.trusted_hc_mm[0]:
        # A head of a size SonoNet-16 was not trained on: on small heads it names background, lips, kidneys or
        # the abdomen as often as a brain plane. Its answer is weak evidence there: the gate decides at its own
        # threshold, but another standard plane named with confidence asks the gate to be sure.
        sure_other = label is not PlaneClass.BACKGROUND and prob >= p.other_sure
        decision = _gate_alone(e, p, p.sure if sure_other else p.threshold)
        return PlaneDecision(decision.outcome, outside)
    if label is PlaneClass.BACKGROUND and e.hc_mm > p.trusted_hc_mm[1]:
        # A late head SonoNet-16 calls background (it was trained on 18-22 weeks), or other anatomy it has no class
        # for: the gate's review band applies unless SonoNet-16 sees some brain plane in it too.
        brain = e.plane.head
        if e.gate >= p.threshold and brain >= p.brain_hint:
            return PlaneDecision(PlaneOutcome.HEAD, f"{outside}; brain planes {brain:.2f}")
        decision = _gate_alone(e, p, p.sure)
        return PlaneDecision(decision.outcome, f"{outside}; brain planes {brain:.2f}")
    if label is PlaneClass.BACKGROUND:
        # Background is SonoNet-16's "none of my planes", which a head it has not learnt also is: with the gate
        # sure, the image is taken as the gate alone would take it; a named plane (below) asks for more.
        if e.gate >= p.sure:
            return PlaneDecision(PlaneOutcome.HEAD, f"{says}: the gate is sure")
        if e.gate >= p.threshold:
            return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says}: they disagree")
        return PlaneDecision(PlaneOutcome.NOT_HEAD, says)
    if e.gate >= p.sure:
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says}: they disagree")
    if prob < p.other_sure and e.gate >= p.threshold:
        return PlaneDecision(PlaneOutcome.UNCERTAIN, f"{says}: neither is sure")
    return PlaneDecision(PlaneOutcome.NOT_HEAD, says)
