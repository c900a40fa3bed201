"""``dicom_io.sr``: the SR of one measurement, read back with pydicom and with dcmtk (dsrdump, dcmdump)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_io.phantom import make_phantom
from dicom_io.sr import HeadMeasurement, SrError, build_sr, ellipse_graphic_data, sr_uids, write_sr
from dicom_io.writer import ScanIdentity, write_us_image
from tests.conftest import require

VERSION = "ab" * 32  # a sha256 hex digest
PAD_X, PAD_Y = 40, 24  # the calibrated region's top-left corner in the full frame


def _items(ds: Dataset) -> Iterator[Dataset]:
    """Every content item of an SR tree, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _named(ds: Dataset, code: str) -> list[Dataset]:
    return [i for i in _items(ds) if "ConceptNameCodeSequence" in i and i.ConceptNameCodeSequence[0].CodeValue == code]


def _num(ds: Dataset, code: str) -> tuple[float, str, str]:
    (item,) = _named(ds, code)
    value = item.MeasuredValueSequence[0]
    unit = value.MeasurementUnitsCodeSequence[0]
    return float(value.NumericValue), unit.CodeValue, unit.CodingSchemeDesignator


@pytest.fixture()
def source(tmp_path: Path) -> tuple[Path, Dataset, tuple[float, float, float, float, float]]:
    """A phantom inside a larger frame: region at (PAD_X, PAD_Y), 0.15 mm/px; its true outer ellipse (px, region)."""
    phantom = make_phantom(shape=(300, 400), hc_mm=150.0, spacing_mm=0.15, angle=0.4, seed=2)
    frame = np.zeros((300 + 2 * PAD_Y, 400 + 2 * PAD_X), np.uint8)
    frame[PAD_Y:PAD_Y + 300, PAD_X:PAD_X + 400] = phantom.image
    ident = ScanIdentity(patient_id="PID-7", patient_name="Doe^Jane", study_date=dt.date(2026, 3, 2),
                         accession_number="ACC-1")
    path = write_us_image(tmp_path / "us.dcm", frame, 0.15, identity=ident,
                          region_bounds=(PAD_X, PAD_Y, PAD_X + 399, PAD_Y + 299))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ds.PatientBirthDate = "19900101"
    return path, ds, phantom.outer


def _measurement(ds: Dataset, outer: tuple[float, float, float, float, float], **changes: object) -> HeadMeasurement:
    cx, cy, a, b, angle = outer
    s = 0.15
    m = HeadMeasurement(
        sop_instance_uid=str(ds.SOPInstanceUID), frame=1, hc_mm=151.23, bpd_mm=2 * b * s, ofd_mm=2 * a * s,
        status="measured", model_name="unet-hc18", model_version=VERSION, quality=0.8731, flags=(),
        ga_estimate_days=121.4, ga_formula="intergrowth_2016", ellipse_mm=(cx * s, cy * s, a * s, b * s, angle),
        spacing_mm=(s, s), spacing_source="us_region", region_origin_px=(PAD_X, PAD_Y))
    return dataclasses.replace(m, **changes)  # type: ignore[arg-type]


def test_sr_holds_values_codes_identity_and_references(source, tmp_path: Path) -> None:
    _, ds, outer = source
    m = _measurement(ds, outer)

    sr = pydicom.dcmread(write_sr(tmp_path / "sr", build_sr(ds, m)))

    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR Storage
    assert sr.Modality == "SR"
    for keyword in ("PatientID", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        assert sr[keyword].value == ds[keyword].value, keyword
    assert ds.PatientName and sr.PatientName == ""  # filed by ID and study: the name stays out of the outbox
    assert sr.SeriesInstanceUID != ds.SeriesInstanceUID
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "FINAL")
    root = sr.ConceptNameCodeSequence[0]
    assert (root.CodeValue, root.CodingSchemeDesignator) == ("125000", "DCM")
    assert _num(sr, "11984-2") == (151.23, "mm", "UCUM")
    assert _num(sr, "11820-8")[0] == pytest.approx(m.bpd_mm)
    assert _num(sr, "11851-3")[0] == pytest.approx(m.ofd_mm)
    assert _num(sr, "18185-9") == (121.4, "d", "UCUM")
    (equation,) = _named(sr, "121420")
    assert equation.ConceptCodeSequence[0].CodingSchemeDesignator == "99FETALHC"
    assert _num(sr, "QUALITY")[0] == pytest.approx(0.8731)
    assert {i.TextValue for i in _named(sr, "111001")} == {"unet-hc18"}
    assert {i.TextValue for i in _named(sr, "111003")} == {VERSION}
    (status,) = _named(sr, "STATUS")
    assert status.ConceptCodeSequence[0].CodeValue == "MEASURED"
    assert "99FETALHC" in [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence]
    # The source instance, referenced from the content (single frame: no frame number) and as evidence.
    images = [i for i in _items(sr) if i.ValueType == "IMAGE"]
    assert images and all(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID for i in images)
    assert all(i.ReferencedSOPSequence[0].ReferencedSOPClassUID == ds.SOPClassUID for i in images)
    assert all("ReferencedFrameNumber" not in i.ReferencedSOPSequence[0] for i in images)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == ds.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_ellipse_scoord_lies_on_the_head_in_full_frame_pixels(source) -> None:
    _, ds, outer = source
    cx, cy, a, b, angle = outer

    sr = build_sr(ds, _measurement(ds, outer))

    (scoord,) = [i for i in _items(sr) if i.ValueType == "SCOORD"]
    assert scoord.GraphicType == "ELLIPSE"
    points = np.asarray(scoord.GraphicData, dtype=float).reshape(4, 2)
    # Pixel centres are at +0.5 (PS3.3 C.18.6.1.1); the region starts at (PAD_X, PAD_Y).
    centre = np.array([PAD_X + cx + 0.5, PAD_Y + cy + 0.5])
    major = np.array([math.cos(angle), math.sin(angle)]) * a
    minor = np.array([-math.sin(angle), math.cos(angle)]) * b
    got_major = {tuple(np.round(p, 3)) for p in points[:2]}
    got_minor = {tuple(np.round(p, 3)) for p in points[2:]}
    assert got_major == {tuple(np.round(centre + major, 3)), tuple(np.round(centre - major, 3))}
    assert got_minor == {tuple(np.round(centre + minor, 3)), tuple(np.round(centre - minor, 3))}
    (selected,) = scoord.ContentSequence
    assert (selected.RelationshipType, selected.ValueType) == ("SELECTED FROM", "IMAGE")


def test_anisotropic_pixels_give_the_pixel_ellipse_axes() -> None:
    sx, sy = 0.1, 0.25
    m = HeadMeasurement(sop_instance_uid="1.2.3", hc_mm=100.0, bpd_mm=20.0, ofd_mm=30.0, status="measured",
                        model_name="n", model_version=VERSION, ellipse_mm=(20.0, 15.0, 15.0, 10.0, 0.6),
                        spacing_mm=(sx, sy), spacing_source="pixel_spacing")
    points = ellipse_graphic_data(m, 200, 400)

    assert points is not None
    centre = points.mean(axis=0)
    assert np.allclose(centre, [20.0 / sx + 0.5, 15.0 / sy + 0.5])
    major, minor = points[1] - points[0], points[3] - points[2]
    assert abs(np.dot(major, minor)) < 1e-6 and np.linalg.norm(major) > np.linalg.norm(minor)
    # Back in mm, every endpoint lies on the measured ellipse.
    c, s = math.cos(0.6), math.sin(0.6)
    for x, y in points:
        dx, dy = (x - 0.5) * sx - 20.0, (y - 0.5) * sy - 15.0
        u, v = (dx * c + dy * s) / 15.0, (-dx * s + dy * c) / 10.0
        assert u * u + v * v == pytest.approx(1.0, abs=1e-9)


def test_no_scoord_when_the_pixel_frame_is_unknown(source) -> None:
    _, ds, outer = source
    for changes in ({"region_origin_px": None}, {"spacing_source": "given"}, {"ellipse_mm": None},
                    {"region_origin_px": (10_000, 0)}):
        sr = build_sr(ds, _measurement(ds, outer, **changes))
        assert [i for i in _items(sr) if i.ValueType == "SCOORD"] == [], changes
        (hc,) = _named(sr, "11984-2")
        assert [i.ValueType for i in hc.ContentSequence if i.RelationshipType == "INFERRED FROM"] == ["IMAGE"]


def test_needs_review_says_so(source) -> None:
    _, ds, outer = source
    m = _measurement(ds, outer, status="needs_review", flags=("low_confidence", "irregular_boundary"), quality=0.41)

    sr = build_sr(ds, m)

    assert sr.PreliminaryFlag == "PRELIMINARY"
    (status,) = _named(sr, "STATUS")
    assert status.ConceptCodeSequence[0].CodeValue == "NEEDS_REVIEW"
    assert sorted(i.ConceptCodeSequence[0].CodeValue for i in _named(sr, "FLAG")) == ["IRREG_BOUNDARY",
                                                                                       "LOW_CONFIDENCE"]
    (comment,) = _named(sr, "121106")
    assert comment.TextValue.startswith("NEEDS REVIEW (low_confidence, irregular_boundary)")


def test_ga_outside_its_formula_range_and_hadlock_codes(source) -> None:
    _, ds, outer = source
    out = build_sr(ds, _measurement(ds, outer, ga_formula="intergrowth_2016_out_of_range"))
    hadlock = build_sr(ds, _measurement(ds, outer, ga_formula="hadlock_1984"))

    assert _named(out, "18185-9") == []
    (equation,) = _named(hadlock, "121420")
    assert (equation.ConceptCodeSequence[0].CodeValue, equation.ConceptCodeSequence[0].CodingSchemeDesignator) == (
        "11932-1", "LN")


def test_uids_are_deterministic_per_instance_frame_and_model(source) -> None:
    _, ds, outer = source
    m = _measurement(ds, outer)

    first, again = build_sr(ds, m), build_sr(ds, dataclasses.replace(m, hc_mm=152.0))
    other_model = build_sr(ds, dataclasses.replace(m, model_version="cd" * 32))

    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert first.SOPInstanceUID != other_model.SOPInstanceUID
    assert sr_uids(ds.StudyInstanceUID, ds.SOPInstanceUID, 2, VERSION)[1] != first.SOPInstanceUID
    assert pydicom.uid.UID(first.SOPInstanceUID).is_valid


def test_multiframe_reference_names_the_frame(tmp_path: Path) -> None:
    frames = np.stack([make_phantom(shape=(200, 260), hc_mm=120.0, seed=i).image for i in range(3)])
    path = write_us_image(tmp_path / "cine.dcm", frames, 0.15)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    m = HeadMeasurement(sop_instance_uid=str(ds.SOPInstanceUID), frame=2, hc_mm=120.0, bpd_mm=33.0, ofd_mm=42.0,
                        status="measured", model_name="n", model_version=VERSION,
                        ellipse_mm=(19.0, 15.0, 8.0, 6.0, 0.1), spacing_mm=(0.15, 0.15),
                        spacing_source="us_region", region_origin_px=(0, 0))

    sr = build_sr(ds, m)

    images = [i for i in _items(sr) if i.ValueType == "IMAGE"]
    assert images and all(i.ReferencedSOPSequence[0].ReferencedFrameNumber == 2 for i in images)


def test_refuses_what_it_cannot_report(source) -> None:
    _, ds, outer = source
    with pytest.raises(SrError, match="only measured, needs_review"):
        _measurement(ds, outer, status="failed")
    with pytest.raises(SrError, match="hc_mm"):
        HeadMeasurement.from_row({"sop_instance_uid": "1.2", "status": "measured", "model_version": VERSION,
                                  "hc_mm": None, "bpd_mm": 1.0, "ofd_mm": 1.0})
    with pytest.raises(SrError, match="not the source instance"):
        build_sr(ds, _measurement(ds, outer, sop_instance_uid="1.2.3.4"))


def test_from_row_reads_the_pipeline_row(source) -> None:
    _, ds, _ = source
    row = {"sop_instance_uid": ds.SOPInstanceUID, "frame": 1, "hc_mm": 150.0, "bpd_mm": 40.0, "ofd_mm": 50.0,
           "status": "needs_review", "flags": "low_confidence,implausible_hc", "model_name": "unet",
           "model_version": VERSION, "quality": 0.5, "center_x_mm": 30.0, "center_y_mm": 22.0,
           "semi_axis_a_mm": 25.0, "semi_axis_b_mm": 20.0, "angle_rad": 0.2, "spacing_mm_x": 0.15,
           "spacing_mm_y": 0.15, "spacing_source": "us_region", "region_x0": PAD_X, "region_y0": PAD_Y,
           "region_x1": PAD_X + 399, "region_y1": PAD_Y + 299, "ga_estimate_days": None, "ga_formula": None}

    m = HeadMeasurement.from_row(row)

    assert m.flags == ("low_confidence", "implausible_hc")
    assert m.region_origin_px == (PAD_X, PAD_Y) and m.ellipse_mm == (30.0, 22.0, 25.0, 20.0, 0.2)
    assert m.spacing_mm == (0.15, 0.15)


def test_dcmtk_reads_the_sr(source, tmp_path: Path) -> None:
    require(shutil.which("dsrdump") is not None and shutil.which("dcmdump") is not None, "dcmtk (dsrdump, dcmdump)")
    _, ds, outer = source
    path = write_sr(tmp_path / "sr", build_sr(ds, _measurement(ds, outer, status="needs_review",
                                                                flags=("low_confidence",))))

    dump = subprocess.run(["dsrdump", "+Pc", str(path)], capture_output=True, text=True, timeout=60)
    header = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True, timeout=60)

    assert dump.returncode == 0, dump.stderr
    assert dump.stderr.strip() == "", dump.stderr  # no warnings on the content tree or its relationships
    assert "Comprehensive SR Document" in dump.stdout
    assert '(11984-2,LN,"Head Circumference")="151.23" (mm,UCUM,"mm")' in dump.stdout
    assert '(11820-8,LN,"Biparietal Diameter")' in dump.stdout
    assert '(18185-9,LN,"Gestational Age")="121.4" (d,UCUM,"days")' in dump.stdout
    assert "(ELLIPSE," in dump.stdout and "NEEDS_REVIEW" in dump.stdout
    assert header.returncode == 0 and "ComprehensiveSRStorage" in header.stdout


def test_dciodvfy_finds_no_errors(source, tmp_path: Path) -> None:
    require(shutil.which("dciodvfy") is not None, "dciodvfy (Debian package dicom3tools)")
    _, ds, outer = source
    path = write_sr(tmp_path / "sr", build_sr(ds, _measurement(ds, outer)))

    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0 and "Error" not in result.stdout + result.stderr, result.stdout + result.stderr
