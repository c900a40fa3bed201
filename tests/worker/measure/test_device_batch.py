"""The pipeline's device path (issue 23) run on CPU torch: JPEG frames left encoded and decoded in batches, the
batch measured by models.plane.device; the same rows (status, reason, HC within 0.05 mm) as the NumPy path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dicom_io import iter_scans
from dicom_io.encoded import EncodedFrame, EncodedScan, decoded, host_pixels, open_encoded_scans
from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.segmentation.weights import SHIPPED_WEIGHTS
from worker.core.settings import Settings
from worker.measure import pipeline
from worker.measure.pipeline import WorkItem, load_context, measure_rows

HC_TOLERANCE_MM = 0.05


def _settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", spool_dir=tmp_path / "spool", device="cpu",
                    backend="torch", batch_size=4)


def _rows(tmp_path: Path, paths: list[Path], device_path: bool, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    monkeypatch.setattr(pipeline, "uses_device_path", lambda ctx: device_path)
    ctx = load_context(_settings(tmp_path))
    return measure_rows(ctx, [WorkItem(p) for p in paths])


def _assert_same(ref: list[dict], out: list[dict]) -> None:
    for r, o in zip(ref, out):
        assert (r.get("status"), r.get("reason"), r.get("flags")) == (o.get("status"), o.get("reason"), o.get("flags")), r
        assert r.get("detail") == o.get("detail") and r.get("frame") == o.get("frame")
        if r.get("hc_mm") is not None:
            assert abs(r["hc_mm"] - o["hc_mm"]) <= HC_TOLERANCE_MM, (r["path"], r["hc_mm"], o["hc_mm"])
            assert r.get("head_plane_score") == o.get("head_plane_score") and r.get("quality") == o.get("quality")


def test_encoded_scans_decode_as_pydicom_within_one_grey_level(tmp_path: Path) -> None:
    image = make_phantom(hc_mm=200, seed=4).image
    path = write_us_image(tmp_path / "j.dcm", image, 0.15, encoding="jpeg_baseline")
    plan, scans = open_encoded_scans(path)
    scan = next(scans)
    assert isinstance(scan, EncodedScan) and isinstance(scan.pixels, EncodedFrame) and tuple(plan.frames) == (1,)
    assert scan.pixels.shape == image.shape and scan.sop_instance_uid
    reference = next(iter_scans(path))
    grey = decoded(scan).pixels
    assert grey.dtype == np.uint8 and np.abs(grey.astype(int) - reference.pixels.astype(int)).max() <= 1
    assert np.array_equal(host_pixels(scan), grey)
    plain = write_us_image(tmp_path / "u.dcm", image, 0.15)  # not JPEG: decoded by open_scans as before
    assert np.array_equal(next(open_encoded_scans(plain)[1]).pixels, image)


def test_a_region_is_cut_after_decoding(tmp_path: Path) -> None:
    from dicom_io.writer import build_us_dataset, encode

    frame = np.zeros((600, 900), np.uint8)
    frame[40:580, 50:850] = make_phantom(hc_mm=180, seed=2).image
    ds = encode(build_us_dataset(frame, 0.15, region_bounds=(50, 40, 849, 579)), "jpeg_baseline")
    ds.save_as(tmp_path / "r.dcm", enforce_file_format=True)
    scan = next(open_encoded_scans(tmp_path / "r.dcm")[1])
    reference = next(iter_scans(tmp_path / "r.dcm"))
    assert scan.pixels.shape == reference.pixels.shape == (540, 800) and scan.origin_xy == reference.origin_xy
    assert np.abs(decoded(scan).pixels.astype(int) - reference.pixels.astype(int)).max() <= 1


def test_device_path_rows_equal_the_numpy_paths_on_phantoms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [write_us_image(tmp_path / f"{i}.dcm", make_phantom(hc_mm=110 + 45 * i, seed=i).image, 0.15,
                            encoding="jpeg_baseline" if i % 3 else "explicit_le") for i in range(5)]
    noise = (np.random.default_rng(3).random((540, 800)) * 80).astype(np.uint8)
    paths.append(write_us_image(tmp_path / "noise.dcm", noise, 0.15, encoding="jpeg_baseline"))
    broken = tmp_path / "broken.dcm"  # a JPEG frame cut short: a failure of its own, the others measured
    data = (tmp_path / "1.dcm").read_bytes()
    broken.write_bytes(data[:-4000] + data[-12:])
    paths.append(broken)
    ref = _rows(tmp_path, paths, False, monkeypatch)
    out = _rows(tmp_path, paths, True, monkeypatch)
    _assert_same(ref, out)
    assert sum(r.get("status") in ("measured", "needs_review") for r in out) >= 4
    assert out[-1].get("status") == "failed"


@pytest.mark.hc18
def test_device_path_rows_equal_the_numpy_paths_on_scanner_like_hc18_jpegs(
        tmp_path: Path, hc18_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.training.hc18 import load_cases
    from worker.tools.convert_hc18 import convert_case

    val = set(json.loads((SHIPPED_WEIGHTS.parent / "hc18_unet.split.json").read_text())["val"])
    cases = [c for c in load_cases(hc18_dir) if c.name in val][:8]
    paths = [convert_case(c, tmp_path / "dcm", jpeg=True).path for c in cases]
    ref = _rows(tmp_path, paths, False, monkeypatch)
    out = _rows(tmp_path, paths, True, monkeypatch)
    _assert_same(ref, out)
    assert sum(r.get("hc_mm") is not None for r in out) >= 6
