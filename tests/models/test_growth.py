"""Growth standards reproduce the published tables in REFERENCES.md and invert consistently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.growth import (
    GA_FORMULAS,
    WHO_QUANTILES,
    CentileResult,
    GAEstimate,
    Standard,
    centile_curves,
    ga_from_hc,
    hc_centile,
    hc_quantile,
    intergrowth_hc_mean_sd,
)
from models.growth import _WHO_HC  # the raw Kiserud 2017 coefficients

# INTERGROWTH-21st HC centiles, mm (Papageorghiou et al., Lancet 2014; REFERENCES.md).
IG_TABLE = {
    14: (87.4, 90.7, 97.9, 105.0, 108.4),
    20: (158.5, 163.0, 172.5, 182.0, 186.5),
    28: (243.6, 248.9, 260.4, 271.8, 277.2),
    36: (299.2, 305.6, 319.4, 333.2, 339.6),
    40: (309.6, 317.4, 333.9, 350.5, 358.3),
}
IG_CENTILES = (3, 10, 50, 90, 97)
IG_CELLS = [(w, c, hc) for w, row in IG_TABLE.items() for c, hc in zip(IG_CENTILES, row)]

# WHO computed P10/P50/P90, mm (Kiserud et al., PLoS Med 2017; REFERENCES.md).
WHO_TABLE = {20: (162.8, 173.4, 183.3), 28: (251.2, 263.6, 276.6), 40: (325.3, 342.1, 356.7)}
WHO_CELLS = [(w, c, hc) for w, row in WHO_TABLE.items() for c, hc in zip((10, 50, 90), row)]

GAS = (98, 140, 196, 252, 280)


@pytest.mark.parametrize(("weeks", "centile", "expected"), IG_CELLS)
def test_intergrowth_reproduces_published_table(weeks, centile, expected):
    assert hc_quantile(Standard.INTERGROWTH, weeks * 7, centile) == pytest.approx(expected, abs=0.1)


def test_intergrowth_mean_sd_at_20_weeks():
    mean, sd = intergrowth_hc_mean_sd(20.0)
    assert mean == pytest.approx(172.5, abs=0.1)
    # P97 - P50 is 1.881 SD in the published table.
    assert sd == pytest.approx((186.5 - 172.5) / 1.8808, abs=0.1)


@pytest.mark.parametrize(("weeks", "centile", "expected"), WHO_CELLS)
def test_who_reproduces_computed_quantiles(weeks, centile, expected):
    assert hc_quantile("who", weeks * 7, centile) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize("ga", GAS)
@pytest.mark.parametrize("q", WHO_QUANTILES)
def test_who_tabulated_quantile_comes_back_as_itself(ga, q):
    # HC straight from the WHO regression for quantile q, not via hc_quantile.
    b0, b1, b2, b3 = _WHO_HC[q]
    w = ga / 7
    hc = math.exp(b0 + b1 * w + b2 * w**2 + b3 * w**3)
    res = hc_centile(hc, ga, "who")
    assert res.centile == pytest.approx(100 * q, abs=0.01)
    assert res.reason is None


@pytest.mark.parametrize("ga", GAS)
@pytest.mark.parametrize("centile", IG_CENTILES)
def test_intergrowth_published_centile_comes_back_as_itself(ga, centile):
    z = {3: -1.880794, 10: -1.281552, 50: 0.0, 90: 1.281552, 97: 1.880794}[centile]
    mean, sd = intergrowth_hc_mean_sd(ga / 7)
    res = hc_centile(mean + z * sd, ga)
    assert res.standard == "intergrowth"
    assert res.centile == pytest.approx(centile, abs=0.01)
    assert res.z_score == pytest.approx(z, abs=1e-4)


def test_published_table_hc_lands_near_its_centile():
    # Table cells are rounded to 0.1 mm, so the centile agrees only approximately.
    assert hc_centile(333.9, 280).centile == pytest.approx(50, abs=0.5)
    assert hc_centile(158.5, 140).centile == pytest.approx(3, abs=0.2)


@settings(max_examples=200, deadline=None)
@given(
    standard=st.sampled_from(list(Standard)),
    ga=st.floats(98, 280),
    centile=st.floats(1, 99),
)
def test_quantile_centile_round_trip(standard, ga, centile):
    hc = hc_quantile(standard, ga, centile)
    res = hc_centile(hc, ga, standard)
    assert res.centile == pytest.approx(centile, abs=1e-6)
    # The z-score and the centile describe the same point: centile = 100 * Phi(z).
    assert res.centile == pytest.approx(50 * math.erfc(-res.z_score / math.sqrt(2)), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(ga=st.floats(98, 280), a=st.floats(20, 500), b=st.floats(20, 500))
def test_who_centile_is_monotone_in_hc(ga, a, b):
    lo, hi = sorted((a, b))
    assert hc_centile(lo, ga, "who").z_score <= hc_centile(hi, ga, "who").z_score


def test_who_beyond_outer_quantiles_is_extrapolated_not_clamped():
    p1 = hc_quantile("who", 280, 1)
    p99 = hc_quantile("who", 280, 99)
    low, high = hc_centile(p1 - 3, 280, "who"), hc_centile(p99 + 3, 280, "who")
    assert 0 < low.centile < 1 and low.flags == ("below_p3", "below_p10")
    assert 99 < high.centile < 100 and high.flags == ("above_p90", "above_p97")


@pytest.mark.parametrize("centile", [0.5, 99.5, 0, 100])
def test_who_quantile_outside_tabulated_range_raises(centile):
    # INTERGROWTH is a normal distribution: any 0 < centile < 100 has an HC.
    if 0 < centile < 100:
        assert hc_quantile("intergrowth", 200, centile) > 0
    with pytest.raises(ValueError, match="centile_out_of_range"):
        hc_quantile("who", 200, centile)


@pytest.mark.parametrize("standard", list(Standard))
@pytest.mark.parametrize("ga", [97, 281, 70.0, 300.0])
def test_out_of_range_ga_gives_no_centile(standard, ga):
    res = hc_centile(200, ga, standard)
    assert isinstance(res, CentileResult)
    assert res.centile is None and res.z_score is None and res.flags == ()
    assert res.reason == "ga_out_of_range: standard valid 98-280 days (14+0 to 40+0 weeks)"
    assert res.ga_days == ga
    with pytest.raises(ValueError, match="ga_out_of_range"):
        hc_quantile(standard, ga, 50)


@pytest.mark.parametrize("ga", [98, 280])
def test_range_edges_are_inclusive(ga):
    assert hc_centile(200, ga).centile is not None
    assert hc_centile(200, ga, "who").centile is not None


@pytest.mark.parametrize("ga", [None, float("nan")])
def test_missing_ga_gives_no_ga(ga):
    res = hc_centile(250, ga, "who")
    assert res.centile is None and res.z_score is None and res.ga_days is None
    assert res.reason == "no_ga"


FLAG_CASES = [
    (2, ("below_p3", "below_p10")),
    (5, ("below_p10",)),
    (50, ()),
    (95, ("above_p90",)),
    (98, ("above_p90", "above_p97")),
]


@pytest.mark.parametrize("standard", list(Standard))
@pytest.mark.parametrize(("centile", "flags"), FLAG_CASES)
def test_flags(standard, centile, flags):
    res = hc_centile(hc_quantile(standard, 196, centile), 196, standard)
    assert res.flags == flags


def test_unknown_standard_lists_choices():
    with pytest.raises(ValueError, match="intergrowth, who"):
        hc_centile(200, 150, "fenton")
    assert hc_centile(200, 150, "WHO").standard == "who"


@pytest.mark.parametrize("hc", [0, -5, float("nan")])
def test_non_positive_hc_raises(hc):
    with pytest.raises(ValueError):
        hc_centile(hc, 150)
    with pytest.raises(ValueError):
        ga_from_hc(hc)


def test_intergrowth_dating_published_example():
    est = ga_from_hc(250)
    assert isinstance(est, GAEstimate)
    assert est.formula == "intergrowth_2016"
    assert est.ga_days == pytest.approx(189.8, abs=0.1)
    # 189.8 days is past 25+6 weeks (181 days), the formula's intended range.
    assert est.in_range is False and "25+6" in est.note


def test_intergrowth_dating_in_range():
    est = ga_from_hc(175)
    assert 98 <= est.ga_days <= 181
    assert est.in_range is True and est.note is None
    assert ga_from_hc(60).in_range is False  # first trimester, below 14 weeks


@pytest.mark.parametrize(("hc", "weeks"), [(100, 14.66), (175, 20.02), (250, 27.15), (340, 39.11)])
def test_hadlock_examples(hc, weeks):
    est = ga_from_hc(hc, "hadlock_1984")
    assert est.ga_days / 7 == pytest.approx(weeks, abs=0.01)
    assert est.in_range is True and est.note is None


def test_hadlock_flags_outside_study_range():
    est = ga_from_hc(50, "hadlock_1984")
    assert est.in_range is False and "hadlock_1984" in est.note


def test_unknown_formula_lists_formulas():
    assert GA_FORMULAS == ("intergrowth_2016", "hadlock_1984")
    with pytest.raises(ValueError, match="intergrowth_2016, hadlock_1984"):
        ga_from_hc(200, "campbell")


def test_centile_curves():
    ga = np.array([90.0, 98.0, 196.0, 280.0, 290.0])
    curves = centile_curves(Standard.INTERGROWTH, ga)
    assert list(curves) == [3.0, 10.0, 50.0, 90.0, 97.0]
    assert np.isnan(curves[50.0][[0, 4]]).all()
    assert curves[50.0][3] == pytest.approx(333.9, abs=0.1)
    stacked = np.vstack([curves[c][1:4] for c in curves])
    assert (np.diff(stacked, axis=0) > 0).all()  # centile curves never cross
    who = centile_curves("who", [140, 196, 280], centiles=(10, 50, 90))
    assert who[50.0][[0, 2]] == pytest.approx([173.4, 342.1], abs=0.1)
