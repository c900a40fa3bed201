"""dicom_io.calibration: regions in cm first, then Pixel Spacing, else a clear ``uncalibrated`` failure."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_io import CalibrationError, UnsupportedImageError, build_us_dataset, iter_scans, read_scan
from dicom_io.calibration import resolve_calibration, resolve_calibrations, survey_regions
from dicom_io.writer import ultrasound_region
from models.geometry.biometry import measure_head
from us_files import grey_image

Writer = Callable[..., Path]
ROWS, COLS = 120, 200


def _ds(*regions: Dataset, pixel_spacing: list[float] | None = None) -> Dataset:
    ds = Dataset()
    if regions:
        ds.SequenceOfUltrasoundRegions = Sequence(list(regions))
    if pixel_spacing is not None:
        ds.PixelSpacing = pixel_spacing
    return ds


def _tissue(bounds: tuple[int, int, int, int], dx_cm: float = 0.02, dy_cm: float | None = None) -> Dataset:
    return ultrasound_region(bounds, dx_cm * 10, (dx_cm if dy_cm is None else dy_cm) * 10)


def _doppler(bounds: tuple[int, int, int, int]) -> Dataset:
    region = _tissue(bounds)
    region.RegionSpatialFormat, region.RegionDataType = 3, 3  # spectral, PW Doppler
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 4, 7  # s, cm/s
    return region


def test_several_regions_keep_each_usable_tissue_region_largest_first() -> None:
    small, large = (0, 0, 79, 99), (100, 0, 199, 119)
    ds = _ds(_tissue(small, 0.03), _doppler((0, 100, 199, 119)), _tissue(large, 0.02), _tissue((0, 0, 400, 50)))

    calibrations = resolve_calibrations(ds, ROWS, COLS)

    assert [c.region for c in calibrations] == [large, small]
    assert [c.spacing_mm_x for c in calibrations] == pytest.approx([0.2, 0.3])
    assert {c.source.value for c in calibrations} == {"us_region"}
    assert any("region 3 ignored" in note and "exceed the 200x120 image" in note for note in calibrations[0].notes)
    assert resolve_calibration(ds, ROWS, COLS).region == large


def test_negative_physical_deltas_use_their_magnitude() -> None:
    region = _tissue((0, 0, 199, 119))
    region.PhysicalDeltaX, region.PhysicalDeltaY = -0.025, -0.031
    cal = resolve_calibration(_ds(region), ROWS, COLS)
    assert (cal.spacing_mm_x, cal.spacing_mm_y) == pytest.approx((0.25, 0.31))


def test_anisotropic_pixels_are_kept_per_axis_and_the_ellipse_is_fitted_in_mm(write: Writer) -> None:
    sx, sy = 0.2, 0.3  # mm per pixel along x (columns) and y (rows)
    a_mm, b_mm = 30.0, 22.0
    rows, cols = 220, 400
    y, x = np.mgrid[:rows, :cols]
    inside = ((x - cols / 2) * sx / a_mm) ** 2 + ((y - rows / 2) * sy / b_mm) ** 2 <= 1
    image = np.where(inside, 200, 40).astype(np.uint8)
    path = write(build_us_dataset(image, sx, sy))

    scan = read_scan(path)
    bio = measure_head(np.where(scan.pixels > 120, 1.0, 0.0), *scan.spacing_mm)

    assert scan.spacing_mm == pytest.approx((sx, sy))
    h = ((a_mm - b_mm) / (a_mm + b_mm)) ** 2
    true_hc = math.pi * (a_mm + b_mm) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert bio.hc_mm == pytest.approx(true_hc, rel=0.01)


def test_a_region_outside_the_image_is_ignored_and_said_so() -> None:
    outside = _tissue((120, 60, 800, 518))  # pydicom's examples_palette.dcm: bounds for a larger frame
    with pytest.raises(CalibrationError) as err:
        resolve_calibration(_ds(outside), ROWS, COLS)
    assert err.value.reason == "uncalibrated"
    assert "region 0 ignored: bounds (120,60)-(800,518) exceed the 200x120 image" in str(err.value)

    cal = resolve_calibration(_ds(outside, pixel_spacing=[0.3, 0.2]), ROWS, COLS)
    assert (cal.source.value, cal.region) == ("pixel_spacing", None)
    assert any("exceed" in note for note in cal.notes)


def test_one_past_the_last_pixel_is_tolerated_and_clipped() -> None:
    cal = resolve_calibration(_ds(_tissue((120, 60, COLS, ROWS - 1))), ROWS, COLS)  # Max X1 = Columns
    assert cal.region == (120, 60, COLS - 1, ROWS - 1)
    with pytest.raises(CalibrationError):
        resolve_calibration(_ds(_tissue((120, 60, COLS + 1, ROWS - 1))), ROWS, COLS)


def test_pixel_spacing_only_is_row_then_column() -> None:
    cal = resolve_calibration(_ds(pixel_spacing=[0.3, 0.2]), ROWS, COLS)
    assert (cal.spacing_mm_x, cal.spacing_mm_y, cal.source.value) == (0.2, 0.3, "pixel_spacing")


@pytest.mark.parametrize("ds", [_ds(), _ds(pixel_spacing=[0, 0]), _ds(pixel_spacing=[0.2])],
                         ids=["nothing", "zero", "one_value"])
def test_nothing_trustworthy_is_uncalibrated(ds: Dataset) -> None:
    with pytest.raises(CalibrationError) as err:
        resolve_calibration(ds, ROWS, COLS)
    assert err.value.reason == "uncalibrated"


@pytest.mark.parametrize("change, note", [
    ({"PhysicalUnitsXDirection": 2}, "not cm"),  # (0018,6024) 2 = ... not cm
    ({"PhysicalDeltaX": 0.0}, "implausible physical delta"),
    ({"RegionLocationMaxX1": 10}, "too small"),
])
def test_unusable_tissue_regions_are_skipped_with_a_note(change: dict[str, float], note: str) -> None:
    region = _tissue((0, 0, 199, 119))
    for keyword, value in change.items():
        setattr(region, keyword, value)
    survey = survey_regions(_ds(region), ROWS, COLS)
    assert survey.usable == [] and survey.tissue == 1
    assert note in survey.notes[0]


def test_the_same_region_written_twice_is_measured_once() -> None:
    ds = _ds(_tissue((0, 0, 199, 119)), _tissue((0, 0, 199, 119)))
    assert len(resolve_calibrations(ds, ROWS, COLS)) == 1


def test_doppler_regions_alone_are_doppler_only_not_uncalibrated() -> None:
    with pytest.raises(UnsupportedImageError) as err:
        resolve_calibrations(_ds(_doppler((0, 0, 199, 119))), ROWS, COLS)
    assert err.value.reason == "doppler_only"
    # A B-mode region beside the spectrum is measured.
    assert len(resolve_calibrations(_ds(_doppler((0, 60, 199, 119)), _tissue((0, 0, 199, 59))), ROWS, COLS)) == 1


def test_scans_are_cropped_to_their_region_so_burned_in_text_never_reaches_them(write: Writer) -> None:
    frame = np.full((ROWS, COLS), 255, np.uint8)  # burned-in text and rulers everywhere outside the regions
    left, right = (10, 20, 89, 109), (100, 20, 189, 99)
    frame[20:110, 10:90] = 60
    frame[20:100, 100:190] = 90
    frames = np.stack([frame, frame])
    ds = build_us_dataset(frames, 0.2, region_bounds=left)
    ds.SequenceOfUltrasoundRegions.append(ultrasound_region(right, 0.25, 0.25))

    scans = list(iter_scans(write(ds)))

    # One Scan per (frame, region), the larger region first; the pipeline keeps the best of them.
    assert [(s.frame, s.calibration.region) for s in scans] == [(1, left), (1, right), (2, left), (2, right)]
    assert [s.origin_xy for s in scans[:2]] == [(10, 20), (100, 20)]
    assert scans[0].pixels.shape == (90, 80) and scans[1].pixels.shape == (80, 90)
    assert {int(s.pixels.max()) for s in scans} == {60, 90}  # no 255 from outside
    assert scans[1].spacing_mm == pytest.approx((0.25, 0.25))


def test_real_dual_view_yields_both_side_by_side_regions() -> None:
    from us_files import real_file

    scans = list(iter_scans(real_file("gdcm-US-ALOKA-16.dcm")))
    assert [s.calibration.region for s in scans] == [(32, 24, 335, 415), (336, 24, 639, 415)]
    assert all(s.spacing_mm == pytest.approx((0.38265, 0.38265), abs=1e-5) for s in scans)


def test_a_grey_image_written_with_a_region_reads_back_exactly(write: Writer) -> None:
    image = grey_image()
    scan = read_scan(write(build_us_dataset(image, 0.15)))
    assert np.array_equal(scan.pixels, image) and scan.calibration.region == (0, 0, 127, 95)
