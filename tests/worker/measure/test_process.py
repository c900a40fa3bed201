"""``fetalhc process``: generated DICOMs measured in-process into SQLite, failures recorded with reasons."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db import Job, Measurement, session_scope
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from worker.cli import main


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code = main(["process", "--json", *argv])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, lines


def test_process_measures_a_phantom_and_stores_one_row(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_phantom(hc_mm=190.0, spacing_mm=0.15, angle=0.5, seed=3)
    ident = ScanIdentity(patient_id="P-1", study_date=dt.date(2026, 5, 1), last_menstrual_date=dt.date(2025, 12, 1))
    path = write_us_image(tmp_path / "scan.dcm", phantom.image, phantom.spacing_mm, identity=ident)

    code, rows = _run_json(capsys, str(path))
    code2, rows2 = _run_json(capsys, str(path))  # measured again: same row, not a second one

    assert code == code2 == 0
    row = rows[0]
    assert row["status"] in ("measured", "needs_review")
    assert row["hc_mm"] == pytest.approx(phantom.hc_mm, rel=0.08)
    assert (row["spacing_mm_x"], row["spacing_mm_y"], row["spacing_source"]) == (0.15, 0.15, "us_region")
    assert len(row["model_version"]) == 64
    # GA from LMP to study date: 151 days; the centile is for that GA, not for the HC's own estimate.
    assert (row["ga_days"], row["ga_source"]) == (151.0, "lmp")
    assert row["hc_centile"] is not None and 0 <= row["hc_centile"] <= 100
    assert row["ga_estimate_days"] is not None
    with session_scope(fetalhc_env_url()) as s:
        stored = s.scalars(select(Measurement)).all()
        assert len(stored) == 1
        assert stored[0].hc_mm == rows2[0]["hc_mm"]
        assert stored[0].patient_id == "P-1"
        assert [j.status for j in s.scalars(select(Job).order_by(Job.id))] == [row["status"].replace(
            "measured", "done")] * 2


def fetalhc_env_url() -> str:
    from worker.core.settings import get_settings

    return get_settings().database_url


def test_process_records_failures_with_reasons(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    image = make_phantom(seed=1).image
    write_us_image(scans / "a_uncal.dcm", image, 0.15, regions=False)
    not_dicom = scans / "b_notes.txt"
    not_dicom.write_text("not an image")
    write_us_image(scans / "c_blank.dcm", np.zeros((300, 400), np.uint8), 0.2)

    code, rows = _run_json(capsys, str(scans))

    assert code == 3  # some scans failed
    by_name = {Path(r["path"]).name: r for r in rows}
    assert (by_name["a_uncal.dcm"]["status"], by_name["a_uncal.dcm"]["reason"]) == ("failed", "uncalibrated")
    assert "Pixel Spacing" in by_name["a_uncal.dcm"]["detail"]
    assert (by_name["b_notes.txt"]["status"], by_name["b_notes.txt"]["reason"]) == ("failed", "not_dicom")
    assert by_name["b_notes.txt"]["sop_instance_uid"] is None
    assert (by_name["c_blank.dcm"]["status"], by_name["c_blank.dcm"]["reason"]) == ("failed", "blank_image")
    with session_scope(fetalhc_env_url()) as s:
        # Readable DICOMs get a failed measurement row; every file has a failed job with its reason.
        assert sorted(m.reason for m in s.scalars(select(Measurement))) == ["blank_image", "uncalibrated"]
        assert sorted(j.reason for j in s.scalars(select(Job))) == ["blank_image", "not_dicom", "uncalibrated"]
        assert {j.status for j in s.scalars(select(Job))} == {"failed"}


def test_process_refuses_a_scan_over_the_memory_budget(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``FETALHC_MAX_SCAN_MB`` bounds ``fetalhc process`` as it bounds the worker: a permanent, recorded failure."""
    fetalhc_env.setenv("FETALHC_MAX_SCAN_MB", "0.1")  # 0.1 MiB: less than one 480 x 640 frame (0.29 MiB)
    path = write_us_image(tmp_path / "big.dcm", np.zeros((480, 640), np.uint8), 0.15)

    code, rows = _run_json(capsys, str(path))

    assert code == 3
    assert (rows[0]["status"], rows[0]["reason"]) == ("failed", "over_memory_budget")
    assert "FETALHC_MAX_SCAN_MB" in rows[0]["detail"]
    with session_scope(fetalhc_env_url()) as s:
        assert [(m.status, m.reason) for m in s.scalars(select(Measurement))] == [("failed", "over_memory_budget")]
        assert [(j.status, j.reason) for j in s.scalars(select(Job))] == [("failed", "over_memory_budget")]

    fetalhc_env.setenv("FETALHC_MAX_SCAN_MB", "8")  # within budget: read (a blank frame, so not a head)
    from worker.core.settings import get_settings

    get_settings.cache_clear()
    code, rows = _run_json(capsys, str(path))
    assert rows[0]["reason"] != "over_memory_budget"
