"""Real scanner files from pydicom-data (MIT): Philips, SonoSite, Aloka and GE ultrasound, read offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import uid as pdu

from dicom_io import DicomError, iter_scans, read_header
from dicom_io.frames import frames_to_measure
from dicom_io.reader import iter_frames, to_grey
from us_files import real_file

OB_REGION = (120, 60, 799, 518)  # Philips CX50: Max X1 = 800 = Columns, tolerated and clipped


def _grey(name: str, index: int = 0) -> np.ndarray:
    path = real_file(name)
    header = read_header(path)
    return to_grey(next(iter_frames(path, header, [index]))[1], header.dataset)


@pytest.mark.parametrize("name, syntax, frames", [
    ("OBXXXX1A.dcm", pdu.ExplicitVRLittleEndian, [1]),
    ("OBXXXX1A_2frame.dcm", pdu.ExplicitVRLittleEndian, [1, 2]),
    ("OBXXXX1A_expb.dcm", pdu.ExplicitVRBigEndian, [1]),
    ("OBXXXX1A_expb_2frame.dcm", pdu.ExplicitVRBigEndian, [1, 2]),
    ("OBXXXX1A_rle.dcm", pdu.RLELossless, [1]),
    ("OBXXXX1A_rle_2frame.dcm", pdu.RLELossless, [1, 2]),
])
def test_philips_cx50_obstetric_uses_its_2d_region(name: str, syntax: str, frames: list[int]) -> None:
    path = real_file(name)
    header = read_header(path)
    scans = list(iter_scans(path))

    assert header.transfer_syntax == syntax
    assert header.dataset.PhotometricInterpretation == "PALETTE COLOR"
    assert [s.frame for s in scans] == frames
    for scan in scans:
        assert scan.calibration.source.value == "us_region"
        assert scan.calibration.region == OB_REGION  # the 2-D tissue region, not the ECG trace below it
        assert scan.spacing_mm == pytest.approx((0.26229, 0.26229), abs=5e-6)
        assert scan.pixels.shape == (459, 680)
    # Every encoding of the same image gives the same pixels (big-endian palettes included).
    assert np.array_equal(scans[0].pixels, next(iter_scans(real_file("OBXXXX1A.dcm"))).pixels)


def test_philips_epiq_jpeg_lossless() -> None:
    path = real_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    scans = list(iter_scans(path))
    assert read_header(path).transfer_syntax == pdu.JPEGLosslessSV1
    assert len(scans) == 1
    assert scans[0].calibration.region == (14, 38, 1010, 758)
    assert scans[0].spacing_mm == pytest.approx((0.254767, 0.254767), abs=1e-6)
    assert scans[0].pixels.std() > 10  # a real decoded picture, not a blank frame


def test_sonosite_jpeg_baseline_cine_reads_named_frames_only() -> None:
    path = real_file("color3d_jpeg_baseline.dcm")
    header = read_header(path)
    scans = list(iter_scans(path, [1, 120]))

    assert header.dataset.PhotometricInterpretation == "YBR_FULL_422"
    assert header.pixels is not None and header.pixels.fragments == 120
    assert len(frames_to_measure(header.dataset)) == 120  # no Representative Frame Number: all of them
    assert [(s.frame, s.frames_in_instance) for s in scans] == [(1, 120), (120, 120)]
    assert all(s.spacing_mm == pytest.approx((0.5105, 0.5105), abs=1e-4) for s in scans)
    assert all(s.pixels.shape == (384, 512) for s in scans)


@pytest.mark.parametrize("name", ["gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"])
def test_aloka_16_bit_palette_dual_view(name: str) -> None:
    scans = list(iter_scans(real_file(name)))
    assert [s.calibration.region for s in scans] == [(32, 24, 335, 415), (336, 24, 639, 415)]
    assert np.array_equal(_grey(name), _grey("gdcm-US-ALOKA-16.dcm"))


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "US1_UNCI.dcm", "US1_J2KR.dcm", "US1_J2KI.dcm"])
def test_ge_without_calibration_is_uncalibrated(name: str) -> None:
    with pytest.raises(DicomError) as err:
        list(iter_scans(real_file(name)))
    assert err.value.reason == "uncalibrated"


def test_ge_jpeg2000_ybr_rct_and_ict_decode_like_their_uncompressed_twins() -> None:
    assert read_header(real_file("US1_J2KR.dcm")).dataset.PhotometricInterpretation == "YBR_RCT"
    assert read_header(real_file("US1_J2KI.dcm")).dataset.PhotometricInterpretation == "YBR_ICT"
    assert np.array_equal(_grey("US1_J2KR.dcm"), _grey("US1_UNCR.dcm"))  # lossless
    lossy = np.abs(_grey("US1_J2KI.dcm").astype(int) - _grey("US1_UNCI.dcm").astype(int))
    assert lossy.mean() < 2.0


@pytest.mark.parametrize("name, size", [("examples_palette.dcm", "800x350"), ("examples_ybr_color.dcm", "320x240")])
def test_pydicom_examples_whose_region_does_not_fit_are_refused_saying_why(name: str, size: str) -> None:
    with pytest.raises(DicomError) as err:
        list(iter_scans(real_file(name)))
    assert err.value.reason == "uncalibrated"
    assert f"exceed the {size} image" in str(err.value)
    assert _grey(name).std() > 5  # the pixels themselves decode fine


def test_fetalhc_process_json_on_real_files(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    files = [real_file(n) for n in ("OBXXXX1A.dcm", "US1_UNCR.dcm", "examples_palette.dcm")]
    code = main(["process", "--json", *map(str, files)])
    rows = {Path(r["path"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}

    assert code == 3  # some failed
    ob = rows["OBXXXX1A.dcm"]
    assert (ob["spacing_source"], round(ob["spacing_mm_x"], 5), round(ob["spacing_mm_y"], 5)) == (
        "us_region", 0.26229, 0.26229)
    assert ob["status"] in ("measured", "needs_review") or ob["reason"]
    assert (rows["US1_UNCR.dcm"]["status"], rows["US1_UNCR.dcm"]["reason"]) == ("failed", "uncalibrated")
    assert rows["examples_palette.dcm"]["reason"] == "uncalibrated"
    assert "exceed the 800x350 image" in rows["examples_palette.dcm"]["detail"]
