"""Ellipse fitting and HC: rasterised ellipses of known axes come back within 0.5% of their perimeter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.errors import MeasurementError
from models.geometry.biometry import measure_head
from models.geometry.ellipse import Ellipse, fit_ellipse, fit_ellipse_robust, ramanujan_perimeter


def test_ramanujan_matches_circle_and_numeric_integral() -> None:
    assert ramanujan_perimeter(10, 10) == pytest.approx(2 * math.pi * 10, rel=1e-12)
    a, b = 30.0, 12.0
    t = np.linspace(0, 2 * np.pi, 200001)
    numeric = np.trapezoid(np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2), t)
    assert ramanujan_perimeter(a, b) == pytest.approx(numeric, rel=1e-6)
    # pi*(a+b) is what HC18's reference does NOT use: it is visibly lower.
    assert math.pi * (a + b) < ramanujan_perimeter(a, b) - 1.0


@pytest.mark.parametrize("angle", [0.0, 0.4, 1.2, 2.5])
def test_fit_recovers_exact_points(angle: float) -> None:
    truth = Ellipse.make(120.5, 80.25, 60.0, 35.0, angle)
    fitted = fit_ellipse(truth.points(50))
    assert fitted.cx == pytest.approx(truth.cx, abs=1e-6)
    assert fitted.cy == pytest.approx(truth.cy, abs=1e-6)
    assert fitted.a == pytest.approx(truth.a, abs=1e-6)
    assert fitted.b == pytest.approx(truth.b, abs=1e-6)
    assert math.cos(2 * (fitted.angle - truth.angle)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("a", "b", "angle", "spacing"),
    [(150, 110, 0.0, 0.12), (200, 120, 0.7, 0.2), (90, 80, 1.9, 0.3), (260, 180, 2.8, 0.07)],
)
def test_rasterised_ellipse_perimeter_within_half_percent(a: float, b: float, angle: float, spacing: float) -> None:
    truth = Ellipse.make(400.3, 270.6, a, b, angle)
    mask = truth.filled_mask((540, 800)).astype(np.float32)
    bio = measure_head(mask, spacing, spacing)
    assert bio.hc_mm == pytest.approx(truth.perimeter * spacing, rel=0.005)
    assert bio.ofd_mm == pytest.approx(2 * a * spacing, rel=0.01)
    assert bio.bpd_mm == pytest.approx(2 * b * spacing, rel=0.01)
    assert bio.flags == ()


def test_anisotropic_pixels_are_fitted_in_millimetres() -> None:
    # A circle of radius 30 mm drawn on pixels 0.1 mm wide and 0.2 mm tall is an ellipse in pixels.
    sx, sy, radius_mm = 0.1, 0.2, 30.0
    px = Ellipse.make(400, 270, radius_mm / sx, radius_mm / sy, 0.0)
    bio = measure_head(px.filled_mask((540, 800)).astype(np.float32), sx, sy)
    assert bio.hc_mm == pytest.approx(2 * math.pi * radius_mm, rel=0.005)
    assert bio.ellipse_mm.a == pytest.approx(bio.ellipse_mm.b, rel=0.01)


def test_scaled_is_exact_for_rotated_ellipses() -> None:
    e = Ellipse.make(10, 20, 30, 10, 0.3)
    pts = e.points(64) * np.array([2, 3])
    direct = fit_ellipse(pts)
    scaled = e.scaled(2, 3)
    assert scaled.perimeter == pytest.approx(direct.perimeter, rel=1e-9)


def test_robust_fit_ignores_a_shadow_bite() -> None:
    truth = Ellipse.make(0, 0, 50, 40, 0.2)
    pts = truth.points(400)
    pts[:40] *= 0.8  # a shadow pulls part of the boundary inwards
    plain = fit_ellipse(pts)
    robust, inliers = fit_ellipse_robust(pts)
    assert abs(robust.perimeter - truth.perimeter) < abs(plain.perimeter - truth.perimeter) / 3
    assert inliers == pytest.approx(0.9, abs=0.02)


def test_empty_probability_is_a_measurement_error() -> None:
    with pytest.raises(MeasurementError) as info:
        measure_head(np.zeros((100, 120), dtype=np.float32), 0.1, 0.1)
    assert info.value.reason == "no_head_found"


def test_head_cut_by_border_is_flagged() -> None:
    truth = Ellipse.make(60, 100, 120, 80, 0.0)  # sticks out of the left edge
    bio = measure_head(truth.filled_mask((300, 400)).astype(np.float32), 0.2, 0.2)
    assert "cut_by_border" in bio.flags
    assert bio.needs_review


def test_implausible_size_is_flagged() -> None:
    truth = Ellipse.make(200, 150, 40, 30, 0.0)
    bio = measure_head(truth.filled_mask((300, 400)).astype(np.float32), 0.1, 0.1)  # HC about 22 mm
    assert "implausible_hc" in bio.flags


def test_head_partly_outside_the_image_is_measured_on_its_visible_skull() -> None:
    # The right end of the head leaves the picture: the image edge must not be fitted as skull.
    truth = Ellipse.make(700, 270, 160, 120, 0.1)
    bio = measure_head(truth.filled_mask((540, 800)).astype(np.float32), 0.15, 0.15)
    assert bio.hc_mm == pytest.approx(truth.perimeter * 0.15, rel=0.005)
    assert "cut_by_border" not in bio.flags  # most of the outline is visible


def test_flip_disagreement_flags_unstable_and_lowers_quality() -> None:
    from models.segmentation.segment import with_agreement

    shape, spacing = (300, 400), (0.2, 0.2)
    main = Ellipse.make(200, 150, 100, 80, 0.0).filled_mask(shape).astype(np.float32)
    bio = measure_head(main, *spacing)
    agreeing = with_agreement(bio, [bio.hc_mm, bio.hc_mm])
    assert agreeing.tta_spread_mm == 0.0 and "unstable" not in agreeing.flags
    assert agreeing.quality == bio.quality
    smaller = Ellipse.make(200, 150, 90, 70, 0.0).filled_mask(shape).astype(np.float32)
    smaller_hc = measure_head(smaller, *spacing).hc_mm
    disagreeing = with_agreement(bio, [bio.hc_mm, smaller_hc])
    assert "unstable" in disagreeing.flags
    assert disagreeing.tta_spread_mm == pytest.approx(bio.hc_mm - smaller_hc, abs=1e-3)
    assert disagreeing.quality < bio.quality
    lost = with_agreement(bio, [bio.hc_mm, float("inf")])  # a flip on which no head was measured
    assert "unstable" in lost.flags and lost.tta_spread_mm is None and lost.quality == 0.0
