"""dicom_io.reader: every pixel layout and transfer syntax, multi-frame reading, and each clear refusal."""

from __future__ import annotations

import copy
import datetime as dt
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import uid as pdu
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from dicom_io import DicomError, ScanIdentity, UnsupportedImageError, build_us_dataset, iter_scans, read_scan
from dicom_io.reader import MAX_FRAMES, read_header
from dicom_io.writer import encode
from us_files import SPACING_MM, VARIANTS, grey_image, real_file, variant

Writer = Callable[..., Path]


# -- photometric interpretations, bit depths, endianness, transfer syntaxes ---------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_every_pixel_layout_reads_back_as_the_same_grey_image(name: str, write: Writer) -> None:
    grey = grey_image()
    ds, expected, tolerance = variant(name, grey)
    path = write(ds, f"{name}.dcm")

    scans = list(iter_scans(path))

    assert len(scans) == 1
    scan = scans[0]
    assert scan.pixels.dtype == np.uint8 and scan.pixels.shape == grey.shape
    assert int(np.abs(scan.pixels.astype(int) - expected.astype(int)).max()) <= tolerance
    assert scan.spacing_mm == pytest.approx((SPACING_MM, SPACING_MM))
    assert scan.calibration.source.value == "us_region"


def test_variants_cover_the_photometrics_and_syntaxes_the_issue_lists(write: Writer) -> None:
    seen_pi, seen_ts, seen_bits = set(), set(), set()
    for name in VARIANTS:
        ds, _, _ = variant(name, grey_image())
        seen_pi.add(str(ds.PhotometricInterpretation))
        seen_ts.add(str(ds.file_meta.TransferSyntaxUID))
        seen_bits.add(int(ds.BitsAllocated))
    assert {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_RCT",
            "YBR_ICT"} <= seen_pi
    assert {pdu.ExplicitVRLittleEndian, pdu.ExplicitVRBigEndian, pdu.RLELossless, pdu.JPEGBaseline8Bit,
            pdu.JPEGLSLossless, pdu.JPEG2000Lossless, pdu.JPEG2000} <= seen_ts
    assert seen_bits == {8, 16}


@pytest.mark.parametrize("syntax", [pdu.RLELossless, pdu.JPEGBaseline8Bit, pdu.JPEGExtended12Bit, pdu.JPEGLossless,
                                    pdu.JPEGLosslessSV1, pdu.JPEGLSLossless, pdu.JPEGLSNearLossless,
                                    pdu.JPEG2000Lossless, pdu.JPEG2000])
def test_decoder_plugin_is_pinned_and_installed(syntax: str) -> None:
    from pydicom.pixels import get_decoder

    from dicom_io.reader import DECODER_PLUGINS

    assert DECODER_PLUGINS[syntax] == "pylibjpeg"
    assert "pylibjpeg" in get_decoder(syntax).available_plugins


def test_jpeg_baseline_ybr_full_422_written_like_a_scanner_reads_back(write: Writer) -> None:
    grey = grey_image()
    ds = encode(build_us_dataset(grey, SPACING_MM), "jpeg_baseline")
    path = write(ds)

    header = read_header(path)
    scan = read_scan(path)

    assert header.transfer_syntax == pdu.JPEGBaseline8Bit
    assert header.dataset.PhotometricInterpretation == "YBR_FULL_422"
    assert float(np.abs(scan.pixels.astype(int) - grey).mean()) < 2.0


def test_implicit_vr_and_files_without_preamble_are_read(write: Writer, tmp_path: Path) -> None:
    grey = grey_image()
    ds = build_us_dataset(grey, SPACING_MM)
    ds.file_meta.TransferSyntaxUID = pdu.ImplicitVRLittleEndian
    implicit = write(ds, "implicit.dcm")
    # An old archive file: the dataset alone, no 128-byte preamble, no file meta.
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(implicit.read_bytes()[132 + _meta_length(implicit):])

    assert np.array_equal(read_scan(implicit).pixels, grey)
    assert np.array_equal(read_scan(bare).pixels, grey)


def _meta_length(path: Path) -> int:
    data = path.read_bytes()
    # (0002,0000) File Meta Information Group Length: value at bytes 140..144, counted after it.
    return 12 + int.from_bytes(data[140:144], "little")


def test_deflated_explicit_vr_is_read(write: Writer) -> None:
    grey = grey_image()
    ds = build_us_dataset(grey, SPACING_MM)
    ds.file_meta.TransferSyntaxUID = pdu.DeflatedExplicitVRLittleEndian
    assert np.array_equal(read_scan(write(ds)).pixels, grey)


def test_identity_attributes_are_copied_to_the_scan(write: Writer) -> None:
    ident = ScanIdentity(patient_id="P-9", study_date=dt.date(2026, 1, 5), last_menstrual_date=dt.date(2025, 7, 1),
                         accession_number="ACC1", sop_uid="1.2.3.4", study_uid="1.2.3", series_uid="1.2.3.5")
    scan = read_scan(write(build_us_dataset(grey_image(), SPACING_MM, identity=ident)))
    assert (scan.sop_instance_uid, scan.study_instance_uid, scan.series_instance_uid) == ("1.2.3.4", "1.2.3", "1.2.3.5")
    assert (scan.patient_id, scan.accession_number) == ("P-9", "ACC1")
    assert (scan.study_date, scan.last_menstrual_date) == (dt.date(2026, 1, 5), dt.date(2025, 7, 1))
    assert scan.sop_class_uid == "1.2.840.10008.5.1.4.1.1.6.1"


# -- multi-frame ------------------------------------------------------------------------------------------

def _cine(count: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 200, size=(count, *shape), dtype=np.uint8)
    for i in range(count):
        frames[i, 0, 0] = i  # a frame's own number, to check which one was read
    return frames


@pytest.mark.parametrize("encoding", ["explicit_le", "rle", "jpeg_ls"])
def test_representative_frame_is_the_only_frame_measured(encoding: str, write: Writer) -> None:
    frames = _cine(5)
    ds = encode(build_us_dataset(frames, SPACING_MM, representative_frame=4), encoding)
    scans = list(iter_scans(write(ds)))
    assert [(s.frame, s.frames_in_instance) for s in scans] == [(4, 5)]
    assert np.array_equal(scans[0].pixels, frames[3])


def test_without_representative_frame_every_frame_is_read_in_order(write: Writer) -> None:
    frames = _cine(4)
    scans = list(iter_scans(write(encode(build_us_dataset(frames, SPACING_MM), "rle"))))
    assert [s.frame for s in scans] == [1, 2, 3, 4]
    assert all(np.array_equal(s.pixels, f) for s, f in zip(scans, frames))
    assert scans[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.3.1"  # US Multi-frame Image Storage


def test_frames_can_be_asked_for_and_missing_frames_are_refused(write: Writer) -> None:
    path = write(build_us_dataset(_cine(3), SPACING_MM))
    assert [s.frame for s in iter_scans(path, [3, 1])] == [1, 3]
    assert read_scan(path, 2).pixels[0, 0] == 1
    with pytest.raises(DicomError) as err:
        list(iter_scans(path, [4]))
    assert err.value.reason == "no_such_frame"


@pytest.mark.parametrize("encoding", ["explicit_le", "rle"])
def test_a_cine_is_decoded_one_frame_at_a_time(encoding: str, write: Writer) -> None:
    count, shape = 40, (256, 320)
    path = write(encode(build_us_dataset(_cine(count, shape), SPACING_MM), encoding))
    frame_bytes = shape[0] * shape[1]

    tracemalloc.start()
    try:
        scans = iter_scans(path)
        first = next(scans)
        second = next(scans)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    scans.close()

    assert (first.frame, second.frame) == (1, 2)
    # The whole cine is 40 frames; reading two must hold only a few frames' worth at once.
    assert peak < 8 * frame_bytes, f"peak {peak} bytes for {frame_bytes}-byte frames"


# -- refusals, each with its own reason --------------------------------------------------------------------

def _reason(path: Path) -> str:
    with pytest.raises(DicomError) as err:
        list(iter_scans(path))
    return err.value.reason


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + bytes(300),
                                     bytes(range(256)) * 4])
def test_not_dicom(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "file.dcm"
    path.write_bytes(content)
    assert _reason(path) == "not_dicom"


def test_missing_file(tmp_path: Path) -> None:
    assert _reason(tmp_path / "absent.dcm") == "missing_file"


@pytest.mark.parametrize("name, fraction", [("OBXXXX1A.dcm", 0.003), ("OBXXXX1A.dcm", 0.5),
                                            ("OBXXXX1A_rle.dcm", 0.6), ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0.9)])
def test_truncated_files_say_so(name: str, fraction: float, tmp_path: Path) -> None:
    data = real_file(name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * fraction)])
    assert _reason(path) == "truncated"


def test_truncated_cine_is_refused_before_any_frame(write: Writer, tmp_path: Path) -> None:
    full = write(encode(build_us_dataset(_cine(6), SPACING_MM), "rle"))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full.read_bytes()[:-5000])
    assert _reason(cut) == "truncated"


def test_no_pixel_data(write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    del ds.PixelData
    assert _reason(write(ds)) == "no_pixel_data"


def _report(sop_class: str, modality: str) -> Dataset:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    return ds


@pytest.mark.parametrize("sop_class, modality", [
    ("1.2.840.10008.5.1.4.1.1.88.11", "SR"),  # Basic Text SR
    ("1.2.840.10008.5.1.4.1.1.7", "US"),  # Secondary Capture: a vendor's report page
    ("1.2.840.10008.5.1.4.1.1.104.1", "DOC"),  # Encapsulated PDF
])
def test_not_ultrasound_generated(sop_class: str, modality: str, write: Writer) -> None:
    assert _reason(write(_report(sop_class, modality))) == "not_ultrasound"


def test_not_ultrasound_real_ct() -> None:
    with pytest.raises(UnsupportedImageError) as err:
        read_scan(real_file("CT_small.dcm"))
    assert err.value.reason == "not_ultrasound"
    assert "CT Image Storage" in str(err.value)


def _region(spatial: int, data_type: int, bounds: tuple[int, int, int, int]) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = spatial, data_type, 0
    (region.RegionLocationMinX0, region.RegionLocationMinY0,
     region.RegionLocationMaxX1, region.RegionLocationMaxY1) = bounds
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 4, 7  # seconds, cm/s
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.01, 0.5
    return region


def test_doppler_only_by_regions(write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    ds.SequenceOfUltrasoundRegions = Sequence([_region(3, 3, (0, 40, 127, 95)), _region(4, 9, (0, 0, 127, 20))])
    ds.PixelSpacing = [0.2, 0.2]  # even with a scale, a spectrum holds no head
    assert _reason(write(ds)) == "doppler_only"


def test_doppler_only_by_image_type(write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM, regions=False, pixel_spacing=True)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC", "0008"]  # PW Doppler, no 2D imaging bit
    assert _reason(write(ds)) == "doppler_only"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC", "0011"]  # 2D + colour Doppler: measurable
    assert read_scan(write(ds)).calibration.source.value == "pixel_spacing"


@pytest.mark.parametrize("rows, cols, frames", [(60000, 60000, 1), (96, 128, MAX_FRAMES + 1), (8, 8, 1)])
def test_absurd_dimensions_are_refused_before_decoding(rows: int, cols: int, frames: int, write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = frames
    assert _reason(write(ds)) == "absurd_dimensions"


def test_pixel_data_shorter_than_the_header_says(write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    ds.NumberOfFrames = 3
    assert _reason(write(ds)) == "corrupt_dicom"


@pytest.mark.parametrize("attribute, value", [("BitsAllocated", 32), ("SamplesPerPixel", 4), ("BitsAllocated", 1)])
def test_unsupported_pixel_layouts(attribute: str, value: int, write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    setattr(ds, attribute, value)
    ds.PixelData = bytes(96 * 128 * 16)
    assert _reason(write(ds)) == "unsupported_pixels"


def test_garbage_video_stream_is_undecodable_and_a_syntax_without_decoder_unsupported(write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(500)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pdu.MPEG4HP41  # decoded by PyAV (dicom_io.video): garbage fails there
    assert _reason(write(ds)) in ("undecodable_pixels", "corrupt_dicom")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.55"  # JPEG Full Progression (retired): no decoder
    assert _reason(write(ds)) == "unsupported_transfer_syntax"


def test_garbage_jpeg_stream_is_undecodable(write: Writer) -> None:
    ds = build_us_dataset(grey_image(), SPACING_MM)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pdu.JPEGBaseline8Bit
    assert _reason(write(ds)) == "undecodable_pixels"


def test_every_refusal_is_a_dicom_error_with_a_message_that_names_the_cause(write: Writer) -> None:
    ds = copy.deepcopy(build_us_dataset(grey_image(), SPACING_MM, regions=False))
    with pytest.raises(DicomError) as err:
        read_scan(write(ds))
    assert err.value.reason == "uncalibrated"
    assert "(0028,0030) Pixel Spacing" in str(err.value) and "(0018,6011)" in str(err.value)
