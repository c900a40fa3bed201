"""Cines stored as video (MPEG-4 AVC/H.264): decoded with PyAV, measured on sampled frames, failures named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from db import Job, Measurement, session_scope
from dicom_io.errors import DicomError
from dicom_io.phantom import make_phantom
from dicom_io.reader import iter_frames, read_header
from dicom_io.writer import write_us_image
from worker.cli import main
from worker.core.settings import get_settings

SPACING_MM = 0.3
HC_MM = [150.0, 170.0, 190.0, 210.0, 230.0]  # a different head on each frame: the row's HC names its frame


def _frames() -> np.ndarray:
    return np.stack([make_phantom(shape=(270, 400), hc_mm=hc, spacing_mm=SPACING_MM, seed=i).image
                     for i, hc in enumerate(HC_MM)])


def test_an_h264_cine_decodes_frame_by_frame_close_to_its_source(tmp_path: Path) -> None:
    frames = _frames()
    path = write_us_image(tmp_path / "cine.dcm", frames, SPACING_MM, encoding="h264")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation, int(ds.NumberOfFrames)) == (
        pydicom.uid.MPEG4HP41, "YBR_PARTIAL_420", 5)
    header = read_header(path)
    decoded = dict(iter_frames(path, header, [4, 1]))
    assert sorted(decoded) == [1, 4]
    for index, rgb in decoded.items():
        assert rgb.shape == (270, 400, 3)
        assert np.abs(rgb[..., 0].astype(int) - frames[index]).mean() < 3  # lossy, but the same picture
    assert np.abs(decoded[4][..., 0].astype(int) - frames[1]).mean() > 10  # and not another frame's

    with pytest.raises(DicomError, match="frame 9 is missing from the video stream") as missing:
        list(iter_frames(path, header, [8]))
    assert missing.value.reason == "corrupt_dicom"


def test_an_h264_cine_is_measured_on_its_sampled_frames(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_us_image(tmp_path / "cine.dcm", _frames(), SPACING_MM, encoding="h264")
    fetalhc_env.setenv("FETALHC_MAX_FRAMES", "3")
    get_settings.cache_clear()
    assert main(["process", "--json", str(path)]) == 0
    [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    with session_scope(get_settings().database_url) as s:
        [row] = list(s.scalars(select(Measurement)))
        [job] = list(s.scalars(select(Job)))
        assert row.status in ("measured", "needs_review") and job.status in ("done", "needs_review")
        assert row.frame in (1, 3, 5) and printed["frame"] == row.frame
        assert row.hc_mm == pytest.approx(HC_MM[row.frame - 1], rel=0.08)
        assert row.spacing_source == "us_region"


def test_a_damaged_video_stream_is_a_recorded_failure(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write_us_image(tmp_path / "cine.dcm", _frames(), SPACING_MM, encoding="h264")
    ds = pydicom.dcmread(path)
    raw = bytearray(ds.PixelData)
    raw[16:] = bytes(len(raw) - 16)  # keep the item headers, zero the stream
    ds.PixelData = bytes(raw)
    ds.save_as(path)
    get_settings.cache_clear()
    assert main(["process", "--json", str(path)]) == 3  # the exit status of a run with failures
    [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert printed["status"] == "failed" and printed["reason"] in ("undecodable_pixels", "corrupt_dicom")
    with session_scope(get_settings().database_url) as s:
        [job] = list(s.scalars(select(Job)))
        assert (job.status, job.reason) == ("failed", printed["reason"])
