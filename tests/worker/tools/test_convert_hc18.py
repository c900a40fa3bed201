"""``fetalhc convert-hc18``: HC18 images as scanner-like US Image Storage files that measure like the PNGs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid as pdu

from dicom_io import iter_scans, read_header
from dicom_io.reader import iter_frames, to_grey
from models.training.hc18 import load_cases
from worker.cli import main
from worker.tools.convert_hc18 import convert_hc18

STUDY = dt.date(2026, 3, 2)


def test_uncompressed_file_measures_the_same_hc_as_the_png(
        hc18_dir: Path, tmp_path: Path, fetalhc_env: pytest.MonkeyPatch) -> None:
    from db import upgrade
    from models.geometry.biometry import Biometry
    from models.segmentation.segment import measure_images
    from worker.measure.pipeline import WorkItem, load_context, measure_rows
    from worker.core.settings import get_settings

    converted = convert_hc18(hc18_dir, tmp_path / "dicom", limit=2)
    settings = get_settings()
    upgrade(settings.database_url)
    ctx = load_context(settings)

    images = [np.asarray(Image.open(hc18_dir / "training_set" / c.name).convert("L")) for c in converted]
    png = measure_images(ctx.model.net, images, [(c.pixel_size_mm, c.pixel_size_mm) for c in converted],
                         ctx.model.input_size, ctx.device)
    rows = measure_rows(ctx, [WorkItem(c.path) for c in converted])

    measured = 0
    for scan, from_png, row in zip(converted, png, rows):
        assert (row["spacing_source"], row["spacing_mm_x"]) == ("us_region", pytest.approx(scan.pixel_size_mm))
        assert (row["region_x0"], row["region_y0"], row["region_x1"], row["region_y1"]) == scan.region
        if isinstance(from_png, Biometry):
            assert row["hc_mm"] == pytest.approx(from_png.hc_mm, abs=0.05)
            measured += 1
        else:  # the same pixels fail the same way
            assert (row["status"], row["reason"]) == ("failed", from_png.reason)
    assert measured >= 1


def test_files_are_written_as_a_scanner_would(hc18_dir: Path, tmp_path: Path) -> None:
    first = convert_hc18(hc18_dir, tmp_path / "a", limit=2, study_date=STUDY, lmp_days=150)
    again = convert_hc18(hc18_dir, tmp_path / "b", limit=2, study_date=STUDY, lmp_days=150)
    case = load_cases(hc18_dir, labelled_only=False)[0]
    ds = pydicom.dcmread(first[0].path)
    region = ds.SequenceOfUltrasoundRegions[0]

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1" and ds.Modality == "US"
    assert (region.RegionSpatialFormat, region.RegionDataType) == (1, 1)  # 2-D tissue
    assert (region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection) == (3, 3)  # cm
    assert region.PhysicalDeltaX == pytest.approx(case.pixel_size_mm / 10)
    assert region.TransducerType == "CURVED LINEAR" and region.ReferencePixelY0 == 0
    x0, y0, x1, y1 = first[0].region
    assert (region.RegionLocationMinX0, region.RegionLocationMaxY1) == (x0, y1)
    assert (ds.StudyDate, ds.LastMenstrualDate, ds.PatientID) == ("20260302", "20251003", f"HC18-{case.name[:3]}")
    # Stable UIDs: the same file name gives the same instance, study and series.
    assert [pydicom.dcmread(c.path).SOPInstanceUID for c in first] == [
        pydicom.dcmread(c.path).SOPInstanceUID for c in again]
    assert len({pydicom.dcmread(c.path).SOPInstanceUID for c in first}) == 2

    frame = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns)
    png = case.load_image()
    assert np.array_equal(frame[y0 : y1 + 1, x0 : x1 + 1], png)  # pixels unchanged inside the region
    outside = frame.copy()
    outside[y0 : y1 + 1, x0 : x1 + 1] = 0
    assert outside.max() > 200  # burned-in text and ruler around it
    scan = next(iter_scans(first[0].path))
    assert np.array_equal(scan.pixels, png)  # ...which the crop keeps away from the network


def test_jpeg_option_writes_baseline_ybr_full_422(hc18_dir: Path, tmp_path: Path) -> None:
    plain = convert_hc18(hc18_dir, tmp_path / "plain", limit=1, margin_px=0)[0]
    jpeg = convert_hc18(hc18_dir, tmp_path / "jpeg", limit=1, jpeg=True, margin_px=0)[0]
    header = read_header(jpeg.path)
    grey = to_grey(next(iter_frames(jpeg.path, header, [0]))[1], header.dataset)

    assert header.transfer_syntax == pdu.JPEGBaseline8Bit
    assert header.dataset.PhotometricInterpretation == "YBR_FULL_422"
    assert header.dataset.LossyImageCompression == "01"
    assert header.dataset.SOPInstanceUID != read_header(plain.path).dataset.SOPInstanceUID  # lossy: new instance
    assert jpeg.region == (0, 0, grey.shape[1] - 1, grey.shape[0] - 1)
    png = load_cases(hc18_dir, labelled_only=False)[0].load_image()
    assert float(np.abs(grey.astype(int) - png).mean()) < 2.0
    assert jpeg.path.stat().st_size < plain.path.stat().st_size / 3


def test_lmp_from_the_reference_hc(hc18_dir: Path, tmp_path: Path) -> None:
    from models.growth import ga_from_hc

    scan = convert_hc18(hc18_dir, tmp_path, limit=1, study_date=STUDY, lmp_from_hc=True)[0]
    lmp = dt.datetime.strptime(pydicom.dcmread(scan.path).LastMenstrualDate, "%Y%m%d").date()
    assert scan.hc_mm is not None
    assert (STUDY - lmp).days == round(ga_from_hc(scan.hc_mm, "hadlock_1984").ga_days)


def test_cli_subcommand(hc18_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["convert-hc18", str(hc18_dir), str(tmp_path / "out"), "--limit", "2", "--study-date",
                 "2026-03-02", "--lmp-days", "140", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(lines) == 2
    assert all(Path(line["path"]).is_file() and line["pixel_size_mm"] > 0 for line in lines)

    code = main(["convert-hc18", str(hc18_dir), str(tmp_path / "bad"), "--limit", "1", "--lmp-days", "140"])
    assert code == 2 and "needs a study date" in capsys.readouterr().err
