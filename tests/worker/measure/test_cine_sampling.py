"""A cine without a representative frame is measured on FETALHC_MAX_FRAMES evenly spaced frames, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db import Job, Measurement, session_scope
from dicom_io.phantom import make_phantom
from dicom_io.frames import FramePlan, FrameRule
from dicom_io.writer import write_us_image
from worker.cli import main
from worker.measure.pipeline import frame_note
from worker.core.settings import Settings, get_settings

SPACING_MM = 0.3
HC_MM = [150.0, 170.0, 190.0, 210.0, 230.0]  # a different head on each frame: the row's HC names its frame


def _cine(tmp_path: Path, representative_frame: int | None = None) -> Path:
    frames = np.stack([make_phantom(shape=(270, 400), hc_mm=hc, spacing_mm=SPACING_MM, seed=i).image
                       for i, hc in enumerate(HC_MM)])
    return write_us_image(tmp_path / "cine.dcm", frames, SPACING_MM, representative_frame=representative_frame)


def _process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: Path,
             max_frames: str) -> tuple[list[dict], list[Measurement], list[Job]]:
    monkeypatch.setenv("FETALHC_MAX_FRAMES", max_frames)
    get_settings.cache_clear()
    code = main(["process", "--json", str(path)])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 0
    with session_scope(get_settings().database_url) as s:
        rows = list(s.scalars(select(Measurement)))
        jobs = list(s.scalars(select(Job)))
        s.expunge_all()
    return printed, rows, jobs


def test_a_cine_over_the_cap_is_measured_on_sampled_frames_and_the_row_says_which(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed, rows, jobs = _process(fetalhc_env, capsys, _cine(tmp_path), "3")

    assert len(printed) == len(rows) == len(jobs) == 1  # one row per instance: its best frame
    row = rows[0]
    assert row.frame in (1, 3, 5)  # sample_frames(5, 3): never frame 2 or 4
    assert row.status in ("measured", "needs_review")
    assert row.hc_mm == pytest.approx(HC_MM[row.frame - 1], rel=0.08)
    assert row.detail == (f"cine sampled to 3 of its 5 frames (frames 1, 3, 5; no (0028,6010) Representative "
                          f"Frame Number, FETALHC_MAX_FRAMES=3); best frame {row.frame}")
    assert printed[0]["detail"] == row.detail and printed[0]["frame"] == row.frame
    assert jobs[0].status == {"measured": "done", "needs_review": "needs_review"}[row.status]


def test_with_no_cap_every_frame_is_measured_and_nothing_is_noted(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, rows, _ = _process(fetalhc_env, capsys, _cine(tmp_path), "0")

    assert len(rows) == 1 and 1 <= rows[0].frame <= 5
    assert rows[0].hc_mm == pytest.approx(HC_MM[rows[0].frame - 1], rel=0.08)
    assert rows[0].detail is None


def test_the_representative_frame_is_measured_alone_whatever_the_cap(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, rows, _ = _process(fetalhc_env, capsys, _cine(tmp_path, representative_frame=2), "3")

    assert [(r.frame, r.detail) for r in rows] == [(2, None)]  # frame 2 is not among the sampled 1, 3, 5
    assert rows[0].hc_mm == pytest.approx(HC_MM[1], rel=0.08)


def test_bench_cine_times_the_sampled_frames_without_storing(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fetalhc_env.setenv("FETALHC_MAX_FRAMES", "3")
    get_settings.cache_clear()
    assert main(["bench", "--json", "--cine", str(_cine(tmp_path))]) == 0
    report = json.loads(capsys.readouterr().out)

    assert (report["frames_in_instance"], report["frame_rule"], report["frames_measured"]) == (5, "sampled", 3)
    assert report["rows"] == 1 and report["best_frame"] in (1, 3, 5) and report["seconds"] > 0
    assert not Path(get_settings().database_url.removeprefix("sqlite:///")).exists()  # bench stores nothing


def test_the_note_of_a_cine_where_no_head_was_measured() -> None:
    plan = FramePlan((1, 60, 120), 120, FrameRule.SAMPLED)
    assert frame_note(plan, None) == ("cine sampled to 3 of its 120 frames (frames 1, 60, 120; no (0028,6010) "
                                      "Representative Frame Number, FETALHC_MAX_FRAMES=3); no head measured on "
                                      "any of them")
    assert frame_note(FramePlan((7,), 120, FrameRule.REPRESENTATIVE), 7) is None
    assert frame_note(FramePlan((1, 2), 2, FrameRule.ALL), 2) is None


def test_max_frames_setting_defaults_to_16_and_refuses_negatives(fetalhc_env: pytest.MonkeyPatch) -> None:
    assert Settings().max_frames == 16
    fetalhc_env.setenv("FETALHC_MAX_FRAMES", "0")
    assert Settings().max_frames == 0
    fetalhc_env.setenv("FETALHC_MAX_FRAMES", "-1")
    with pytest.raises(ValueError, match="FETALHC_MAX_FRAMES"):
        Settings()
