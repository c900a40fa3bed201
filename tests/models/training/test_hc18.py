"""HC18 folders: each set is read with its own pixel-size CSV, although the two sets share file names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.training.hc18 import find_csv, load_cases
from tests.models.hc18_support import SPACING_MM, write_hc18_folder

PHANTOMS = (("000_HC.png", 150.0, 0), ("001_HC.png", 200.0, 1))


def test_test_set_never_takes_the_training_csv_beside_it(tmp_path: Path) -> None:
    """The challenge layout: root/{training_set,test_set} with both CSVs in root, same image names."""
    for name in ("training_set", "test_set"):
        write_hc18_folder(tmp_path / "tmp" / name, PHANTOMS, labelled=name == "training_set")
    for csv_file in (tmp_path / "tmp").glob("*/*.csv"):  # the CSVs stand beside the folders, as HC18 ships them
        target = "test_set_pixel_size.csv" if csv_file.parent.name == "test_set" else csv_file.name
        shutil.move(csv_file, tmp_path / "tmp" / target)
    test_csv = tmp_path / "tmp" / "test_set_pixel_size.csv"
    test_csv.write_text(test_csv.read_text().replace(f",{SPACING_MM}", ",0.25"))  # test spacing differs

    root = tmp_path / "tmp"
    assert find_csv(root / "test_set") == test_csv
    assert find_csv(root / "training_set") == root / "training_set_pixel_size_and_HC.csv"
    test_cases = load_cases(root / "test_set", labelled_only=False)
    assert [(c.name, c.pixel_size_mm, c.hc_mm) for c in test_cases] == [("000_HC.png", 0.25, None),
                                                                         ("001_HC.png", 0.25, None)]
    train_cases = load_cases(root / "training_set")
    assert {c.pixel_size_mm for c in train_cases} == {SPACING_MM} and all(c.hc_mm for c in train_cases)
    test_csv.unlink()
    with pytest.raises(FileNotFoundError, match="test_set_pixel_size.csv"):
        find_csv(root / "test_set")


def test_real_hc18_test_set_is_unlabelled_with_its_own_spacing(hc18_dir: Path) -> None:
    cases = load_cases(hc18_dir / "test_set", labelled_only=False)
    assert len(cases) > 300 and all(c.hc_mm is None for c in cases)
    spacing = {c.name: c.pixel_size_mm for c in cases}
    first = (hc18_dir / "test_set_pixel_size.csv").read_text().splitlines()[1].split(",")
    assert spacing[first[0]] == pytest.approx(float(first[1]))
