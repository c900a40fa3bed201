"""Decompression bombs, built by the test and read in a fresh interpreter: refused before decoding, in little memory.

Each bomb claims gigabytes (30000 x 30000 frames, 400 MB of inflated zeros, a 200 GB declared cine, a
2048 x 2048 stream under a 480 x 640 header). The reader must refuse each with its reason, and its peak
RSS (``resource.getrusage``) must stay within a small margin of an interpreter that only imported it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from bombs import (declared_giant, deflate_bomb, j2k_bomb, jpeg_bomb, jpeg_ls_bomb, peak_rss, video_bomb)
from dicom_io.bounds import (BoundedInflater, FrameGeometry, check_budget, check_frame, j2k_geometry, jpeg_geometry,
                             scan_budget)
from dicom_io.errors import DecodeBudgetError, DicomError, PixelHeaderMismatch

# Decoding a 480 x 640 frame, or refusing a bomb, needs a few MB over the interpreter's imports.
MARGIN_MB = 100


@pytest.fixture(scope="module")
def baseline_mb() -> float:
    return float(peak_rss(None)["peak_mb"])  # type: ignore[arg-type]


@pytest.mark.parametrize("build, reason", [
    (jpeg_bomb, "pixel_header_mismatch"), (jpeg_ls_bomb, "pixel_header_mismatch"),
    (j2k_bomb, "pixel_header_mismatch"), (deflate_bomb, "pixel_header_mismatch"),
    (declared_giant, "over_memory_budget"), (video_bomb, "pixel_header_mismatch"),
], ids=["jpeg_sof", "jpeg_ls_sof55", "j2k_siz", "deflate_400mb", "declared_200gb", "h264_2048"])
def test_each_bomb_is_refused_before_it_allocates(build: Callable[[Path], Path], reason: str, tmp_path: Path,
                                                  baseline_mb: float) -> None:
    path = build(tmp_path / "bomb.dcm")
    assert path.stat().st_size < 1 << 20  # a small file...

    result = peak_rss(path)

    assert result["reason"] == reason  # ...refused with its reason, a permanent DicomError
    assert float(result["peak_mb"]) < baseline_mb + MARGIN_MB, result  # ...without allocating what it claims


def test_the_same_files_untouched_still_decode(tmp_path: Path) -> None:
    """The checks refuse only the lie: each encoding, honest, reads as before."""
    import numpy as np

    from dicom_io import iter_scans
    from dicom_io.writer import write_us_image

    image = np.random.default_rng(1).integers(0, 255, (96, 128), dtype=np.uint8)
    for encoding in ("jpeg_baseline", "jpeg_ls", "jpeg2000", "rle", "h264"):
        path = write_us_image(tmp_path / f"{encoding}.dcm", image, 0.2, encoding=encoding)
        [scan] = list(iter_scans(path))
        assert scan.pixels.shape == (96, 128)


def _deflated_file(tmp_path: Path, extra_pixel_bytes: int) -> Path:
    import numpy as np
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from dicom_io.writer import build_us_dataset

    ds = build_us_dataset(np.full((64, 96), 7, np.uint8), 0.2)
    ds.PixelData = ds.PixelData + bytes(extra_pixel_bytes)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / f"deflated{extra_pixel_bytes}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_honest_deflated_file_reads_and_one_inflating_past_its_header_is_refused(tmp_path: Path) -> None:
    from dicom_io import iter_scans

    [scan] = list(iter_scans(_deflated_file(tmp_path, 0)))
    assert scan.pixels.shape == (64, 96) and int(scan.pixels[0, 0]) == 7
    with pytest.raises(PixelHeaderMismatch):  # 2 MiB more than 64 x 96 needs (the slack is 1 MiB)
        list(iter_scans(_deflated_file(tmp_path, 2 << 20)))


def test_the_scan_budget_refuses_what_its_declared_size_needs(tmp_path: Path) -> None:
    from dicom_io import iter_scans
    from dicom_io.writer import write_us_image

    import numpy as np

    path = write_us_image(tmp_path / "a.dcm", np.zeros((512, 512), np.uint8), 0.2)
    with scan_budget(0.1):  # 0.1 MiB: less than one 512 x 512 frame
        with pytest.raises(DecodeBudgetError) as caught:
            list(iter_scans(path))
    assert caught.value.reason == "over_memory_budget" and not caught.value.transient
    assert len(list(iter_scans(path))) == 1  # the default budget (1024 MiB) reads it


def test_frame_header_parsers_read_sof_sof55_and_siz() -> None:
    sof0 = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08\x01\xe0\x02\x80\x01\x01\x11\x00\xff\xda"
    assert jpeg_geometry(sof0) == FrameGeometry(480, 640, 1, 8)
    sof55 = b"\xff\xd8\xff\xf7\x00\x0b\x10\x00\x40\x00\x30\x01\x01\x11\x00"
    assert jpeg_geometry(sof55) == FrameGeometry(64, 48, 1, 16)
    assert jpeg_geometry(b"\xff\xd8\xff\xda\x00\x02") is None  # a scan before any frame header
    siz = (b"\xff\x4f\xff\x51" + struct.pack(">HHIIIIIIIIH", 41, 0, 650, 490, 10, 10, 640, 480, 0, 0, 1)
           + bytes([7, 1, 1]))
    assert j2k_geometry(siz) == FrameGeometry(480, 640, 1, 8)
    jp2 = (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s", 8, b"ftyp") + struct.pack(">I4s", 0, b"jp2c")
           + siz)
    assert j2k_geometry(jp2) == FrameGeometry(480, 640, 1, 8)
    declared = FrameGeometry(480, 640, 1, 8)
    check_frame(sof0, "jpeg", declared, 1)
    with pytest.raises(PixelHeaderMismatch):
        check_frame(sof0, "jpeg", FrameGeometry(480, 640, 3, 8), 1)  # components differ
    with pytest.raises(DicomError) as caught:
        check_frame(b"garbage", "j2k", declared, 2)
    assert caught.value.reason == "undecodable_pixels"


def test_bounded_inflater_never_returns_more_than_asked() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflater.compress(bytes(50 << 20)) + deflater.flush()
    inflater = BoundedInflater(io.BytesIO(stream))
    assert len(inflater.read(1 << 20)) == 1 << 20
    assert not inflater.exhausted()
    with pytest.raises(DicomError):
        BoundedInflater(io.BytesIO(b"\xff" * 64)).read(100)
    with pytest.raises(DecodeBudgetError):
        check_budget(2 << 30, "a test", budget=1 << 30)
