"""The real sample scans shipped for ``fetalhc demo``: present, small, held out, attributed, reproducible."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from dicom_io.reader import open_scans, read_dataset
from models.segmentation.weights import SHIPPED_WEIGHTS
from worker.tools.demo import SAMPLES_DIR, format_report, shipped_samples, write_samples
from worker.tools.make_demo_samples import is_gate_validation_group, make_samples

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared"


def _entries() -> list[dict]:
    return json.loads((SAMPLES_DIR / "samples.json").read_text())


def test_four_held_out_heads_and_two_negatives_ship_each_well_under_100_kb() -> None:
    entries = _entries()
    heads = [e for e in entries if e["kind"] == "head"]
    others = [e for e in entries if e["kind"] == "not_head"]
    assert len(heads) == 4 and len(others) == 2
    assert sorted(p.name for p in SAMPLES_DIR.glob("*.dcm")) == sorted(e["file"] for e in entries)
    val = set(json.loads(SHIPPED_WEIGHTS.with_suffix(".split.json").read_text())["val"])
    for e in heads:  # never trained on: the shipped model's validation split
        assert e["source"] == "HC18" and Path(e["origin"]).name in val and e["true_hc_mm"] > 0
    assert {e["source"] for e in others} == {"PSFHS", "POCUS lung (covid19_ultrasound)"}
    for e in others:  # the head-plane gate's validation side, never fitted on
        assert is_gate_validation_group(e["group"]) and e["true_hc_mm"] is None
    for e in entries:
        assert (SAMPLES_DIR / e["file"]).stat().st_size < 80 * 1024, e["file"]
        assert e["license"] == "CC BY 4.0" and e["attribution"]


def test_each_sample_is_a_calibrated_jpeg_dicom_that_names_its_origin_and_licence() -> None:
    for e in _entries():
        path = SAMPLES_DIR / e["file"]
        ds = read_dataset(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # JPEG Baseline
        assert e["origin"].split("/")[-1] in ds.ImageComments and "CC BY 4.0" in ds.ImageComments
        assert ds.PatientID.startswith("DEMO-")
        _, scans = open_scans(path)
        scan = next(iter(scans))
        assert scan.spacing_mm == pytest.approx((e["pixel_size_mm"], e["pixel_size_mm"]))
        if e["true_hc_mm"]:
            assert f"true HC {e['true_hc_mm']:.2f} mm" in ds.ImageComments


def test_notice_readme_and_package_data_carry_them() -> None:
    notice = (ROOT / "NOTICE").read_text()
    readme = (ROOT / "README.md").read_text()
    for text in (notice, readme):
        for needle in ("van den Heuvel", "e0200412", "PSFHS", "10969427", "Born", "CC BY 4.0", "demo_samples"):
            assert needle in text, needle
    for e in _entries():  # each file's origin is named in both
        origin = Path(e["origin"]).name.split(".")[0]
        assert origin in notice and origin in readme, origin
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "demo_samples/*.dcm" in package_data["worker"] and "demo_samples/*.json" in package_data["worker"]


def test_without_shared_data_the_demo_has_the_shipped_samples_and_phantoms(tmp_path: Path) -> None:
    samples = write_samples(tmp_path, None)
    assert [s.expect for s in samples].count("not_head") == 2
    assert sum(s.origin.startswith("HC18 ") for s in samples) == 4
    assert sum(s.origin == "synthetic phantom" for s in samples) == 3
    assert all(s.path.is_file() and s.path.parent == tmp_path for s in samples)
    rows = [{"status": "measured", "hc_mm": s.true_hc_mm} if s.expect == "head"
            else {"status": "not_head", "head_plane_score": 0.02} for s in samples]
    report = format_report(samples, rows)
    assert "images that are not head planes set aside as not_head: 2 of 2" in report
    assert "not a head plane (head-plane score 0.020)" in report
    assert "mean |error| over 7 measured heads: 0.00 mm" in report


def test_make_samples_reproduces_the_shipped_files(tmp_path: Path) -> None:
    if not ((SHARED / "hc18" / "training_set").is_dir() and (SHARED / "us-negatives" / "manifest.csv").is_file()):
        pytest.skip("../shared/hc18 and ../shared/us-negatives are not here")
    entries = make_samples(SHARED, tmp_path)
    assert entries == _entries()
    for e in entries:
        assert (tmp_path / e["file"]).read_bytes() == (SAMPLES_DIR / e["file"]).read_bytes(), e["file"]
