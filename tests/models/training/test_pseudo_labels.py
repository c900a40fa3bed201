"""Pseudo-labels: an unlabelled folder measured by the shipped model becomes a labelled training folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.geometry.ellipse import ramanujan_perimeter
from models.training.hc18 import load_cases
from models.training.pseudo_labels import write_pseudo_labels
from tests.models.hc18_support import SPACING_MM, write_hc18_folder

PHANTOMS = tuple((f"{800 + i}_HC.png", 150.0 + 40 * i, 30 + i) for i in range(3))


def test_confident_measurements_become_labels_at_the_copy_scale(tmp_path: Path) -> None:
    truth = write_hc18_folder(tmp_path / "unlabelled", PHANTOMS, labelled=False)
    kept, seen = write_pseudo_labels(tmp_path / "unlabelled", tmp_path / "pseudo", factor=2, min_quality=0.3)
    assert seen == 3 and kept >= 2

    cases = load_cases(tmp_path / "pseudo")
    assert len(cases) == kept
    for case in cases:
        assert case.pixel_size_mm == pytest.approx(2 * SPACING_MM, rel=0.01)
        # The redrawn outline reproduces the label's HC, and the label is close to the phantom's truth.
        e = case.reference_ellipse_px()
        outline_hc = ramanujan_perimeter(e.a, e.b) * case.pixel_size_mm
        assert outline_hc == pytest.approx(case.hc_mm, abs=1.0)
        assert case.hc_mm == pytest.approx(truth[case.name][1], rel=0.05)


def test_nothing_below_the_quality_bar_is_written(tmp_path: Path) -> None:
    write_hc18_folder(tmp_path / "unlabelled", PHANTOMS[:1], labelled=False)
    kept, seen = write_pseudo_labels(tmp_path / "unlabelled", tmp_path / "pseudo", min_quality=1.01)
    assert (kept, seen) == (0, 1)
    assert not list((tmp_path / "pseudo" / "training_set").glob("*.png"))
