"""The smaller HC18 copy used for GPU training keeps every case's HC, subject and split."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from models.geometry.ellipse import ramanujan_perimeter
from models.training.hc18 import load_cases, split_by_subject
from models.training.hc18_shrink import shrink
from tests.models.hc18_support import write_hc18_folder

PHANTOMS = tuple((f"{800 + i}_{'2' if i == 3 else ''}HC.png", 90.0 + 40 * i, i) for i in range(5))


@pytest.mark.parametrize(("factor", "jpeg"), [(2.0, None), (1.5, 90)])
def test_shrunken_copy_keeps_hc_in_mm_and_the_split(tmp_path: Path, factor: float, jpeg: int | None) -> None:
    write_hc18_folder(tmp_path / "full", PHANTOMS)
    assert shrink(tmp_path / "full", tmp_path / "small", factor, jpeg) == len(PHANTOMS)

    full, small = load_cases(tmp_path / "full"), load_cases(tmp_path / "small")
    assert [c.subject for c in small] == [c.subject for c in full]
    for big, little in zip(full, small):
        assert little.image_path.suffix == (".jpg" if jpeg else ".png")
        w, h = Image.open(big.image_path).size
        assert Image.open(little.image_path).size == (round(w / factor), round(h / factor))
        assert little.pixel_size_mm == pytest.approx(big.pixel_size_mm * factor, rel=5e-3)
        e, ref = little.reference_ellipse_px(), big.reference_ellipse_px()
        assert ramanujan_perimeter(e.a, e.b) * little.pixel_size_mm == pytest.approx(
            ramanujan_perimeter(ref.a, ref.b) * big.pixel_size_mm, abs=0.2)
        assert little.hc_mm == big.hc_mm
    subjects = [{c.subject for c in side} for side in split_by_subject(small, 0.4, 7)]
    assert subjects == [{c.subject for c in side} for side in split_by_subject(full, 0.4, 7)]
