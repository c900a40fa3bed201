"""The plane decision: the gate alone, and with SonoNet-16's answer, for heads of every size."""

from __future__ import annotations

import pytest

from models.plane.decision import (
    BRAIN_HINT,
    EARLY_FLOOR,
    LATE_MIN_QUALITY,
    OTHER_SURE,
    SURE,
    PlaneEvidence,
    PlaneOutcome,
    PlanePolicy,
    decide,
)
from models.plane.gating import policy_for
from models.plane.sononet import CLASSES, PlaneClass, PlaneProbabilities

T = 0.2363  # the shipped gate's threshold
POLICY = policy_for(T)
HEAD, UNSURE, NOT = PlaneOutcome.HEAD, PlaneOutcome.UNCERTAIN, PlaneOutcome.NOT_HEAD


def says(label: PlaneClass, p: float = 0.95) -> PlaneProbabilities:
    """SonoNet-16's answer: ``label`` at ``p``, the rest spread evenly."""
    rest = (1 - p) / 13
    return PlaneProbabilities(tuple(p if c is label else rest for c in CLASSES))


def mixed(**probs: float) -> PlaneProbabilities:
    """SonoNet-16's answer with the given classes' probabilities (by value), the rest spread evenly."""
    rest = (1 - sum(probs.values())) / (len(CLASSES) - len(probs))
    return PlaneProbabilities(tuple(probs.get(c.value, rest) for c in CLASSES))


def outcome(gate: float, plane: PlaneProbabilities | None = None, hc: float | None = 180.0,
            quality: float | None = 0.9) -> PlaneOutcome:
    return decide(PlaneEvidence(gate, plane, hc, quality if hc is not None else None), POLICY).outcome


@pytest.mark.parametrize(("gate", "expected"), [(0.99, HEAD), (SURE, HEAD), (0.72, UNSURE), (0.28, UNSURE), (T, UNSURE),
                                                (0.2, NOT), (0.01, NOT)])
def test_the_gate_alone_measures_only_above_its_review_band(gate: float, expected: PlaneOutcome) -> None:
    assert outcome(gate) is expected


def test_the_gate_alone_keeps_a_small_well_fitted_head_below_its_threshold_for_review() -> None:
    assert outcome(0.15, hc=75) is UNSURE  # an early head with a faint skull echo
    assert outcome(0.15, hc=75, quality=0.4) is NOT  # a poor fit is no head to keep
    assert outcome(EARLY_FLOOR - 0.01, hc=75) is NOT
    assert outcome(0.15, hc=180) is NOT  # not small


def test_the_gate_alone_keeps_a_late_well_fitted_head_below_its_threshold_for_review() -> None:
    assert outcome(0.22, hc=337, quality=0.86) is UNSURE  # HC18's late heads at gate 0.12 and 0.22
    assert outcome(0.12, hc=290, quality=0.87) is UNSURE
    assert outcome(0.22, hc=337, quality=LATE_MIN_QUALITY - 0.01) is NOT  # not fitted well enough
    assert outcome(EARLY_FLOOR - 0.01, hc=337) is NOT
    assert outcome(0.22, hc=260) is NOT  # not late


def test_a_brain_plane_by_the_classifier_is_never_refused() -> None:
    for label in (PlaneClass.BRAIN_TV, PlaneClass.BRAIN_CB):
        assert outcome(0.5, says(label)) is HEAD  # the gate's review band does not apply: both agree
        assert outcome(0.1, says(label)) is UNSURE
        assert outcome(0.01, says(label), hc=None) is UNSURE  # no head found: the segmentation's failure stands


def test_another_standard_plane_by_the_classifier_is_refused_within_the_gate_review_band() -> None:
    for label in (PlaneClass.ABDOMINAL, PlaneClass.FEMUR, PlaneClass.FOUR_CH, PlaneClass.PROFILE):
        assert outcome(0.72, says(label), hc=285) is NOT  # issue 19's abdomen "at 285 mm"
        assert outcome(0.5, says(label), hc=180) is NOT
        assert outcome(0.5, says(label), hc=None) is NOT
    assert outcome(0.95, says(PlaneClass.ABDOMINAL), hc=200) is UNSURE  # the gate sure: they disagree
    assert outcome(0.32, says(PlaneClass.ABDOMINAL, 0.75), hc=263) is UNSURE  # neither sure
    assert outcome(0.2, says(PlaneClass.ABDOMINAL, 0.75), hc=263) is NOT


def test_background_counts_against_a_head_only_at_the_sizes_sononet_was_trained_on() -> None:
    bg = says(PlaneClass.BACKGROUND, 0.7)
    assert outcome(SURE, bg, hc=180) is HEAD  # the gate sure: taken as the gate alone takes it
    assert outcome(SURE, says(PlaneClass.ABDOMINAL, 0.7), hc=180) is UNSURE  # a named plane asks for more
    assert outcome(0.5, bg, hc=180) is UNSURE
    assert outcome(0.2, bg, hc=180) is NOT
    assert outcome(0.33, bg, hc=75) is HEAD  # an early head SonoNet-16 never saw: the gate decides
    assert outcome(0.15, bg, hc=75) is UNSURE  # ... with the early-head floor
    assert outcome(0.5, bg, hc=None) is NOT


def test_background_on_a_late_head_needs_the_gate_sure_or_a_hint_of_a_brain_plane() -> None:
    bg = says(PlaneClass.BACKGROUND, 0.7)  # brain planes 0.05 together
    assert outcome(0.85, bg, hc=315) is HEAD  # the gate sure
    assert outcome(0.5, bg, hc=309) is UNSURE  # a thorax "at 309 mm" SonoNet-16 has no class for, or a term head
    assert outcome(0.33, bg, hc=315) is UNSURE
    hint = mixed(background=0.55, brain_tv=BRAIN_HINT)  # a term head: SonoNet-16 sees a brain plane in it too
    assert outcome(0.33, hint, hc=301) is HEAD
    assert outcome(0.2, hint, hc=301, quality=0.7) is NOT  # the hint does not lift a failing gate
    assert outcome(0.2, bg, hc=337, quality=0.86) is UNSURE  # a late, well-fitted head below the threshold
    assert outcome(0.2, bg, hc=337, quality=0.7) is NOT
    assert outcome(EARLY_FLOOR - 0.01, bg, hc=337) is NOT


def test_small_heads_are_judged_by_the_gate_which_must_be_sure_when_sononet_names_another_plane() -> None:
    for label in (PlaneClass.LIPS, PlaneClass.KIDNEYS, PlaneClass.ABDOMINAL, PlaneClass.FEMUR, PlaneClass.RVOT):
        assert outcome(0.92, says(label, 0.99), hc=66) is HEAD  # the gate sure
        assert outcome(0.45, says(label, 0.99), hc=66) is UNSURE  # e.g. a femur fitted as a small ellipse
        assert outcome(0.45, says(label, OTHER_SURE), hc=66) is UNSURE
        assert outcome(0.15, says(label, 0.99), hc=66) is UNSURE  # the early-head floor, as before
        assert outcome(0.05, says(label, 0.99), hc=66) is NOT
        assert outcome(0.45, says(label, 0.6), hc=66) is HEAD  # SonoNet-16 not sure: the gate at its threshold
    assert outcome(0.45, says(PlaneClass.BACKGROUND, 0.99), hc=66) is HEAD  # background on an early head


def test_the_policy_follows_a_threshold_override() -> None:
    high = policy_for(0.9)
    assert high.sure == 0.9 and high.early_floor == EARLY_FLOOR
    assert decide(PlaneEvidence(0.85), high).outcome is NOT
    low = policy_for(0.05)
    assert low.early_floor == 0.05 and decide(PlaneEvidence(0.06), low).outcome is UNSURE
    with pytest.raises(ValueError, match="plane policy needs"):
        PlanePolicy(0.5, sure=0.4)


def test_the_decision_says_why() -> None:
    d = decide(PlaneEvidence(0.642, says(PlaneClass.ABDOMINAL, 0.89), 237.4, 0.64), POLICY)
    assert d.outcome is NOT and d.why == "SonoNet-16 says abdominal (0.89), head-plane score 0.642"
    assert "between 0.236 and 0.800" in decide(PlaneEvidence(0.5), POLICY).why
