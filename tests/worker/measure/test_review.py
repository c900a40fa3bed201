"""A reviewer's decision: checked on creation, its values through the pipeline's own biometry and growth code, and
a report that arrives after the review dates the reviewed HC too."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from sqlalchemy import select

from db import Measurement, ReviewDecision, session_scope
from models.geometry.biometry import head_sizes
from models.geometry.ellipse import Ellipse
from models.growth import hc_centile
from tests.dicom_io.ob_reports import Fetus, write_ob_report
from tests.worker.review_support import store_flagged_scans
from worker.cli import main
from worker.core.settings import get_settings
from worker.measure.review import Decision, ReviewRefused, apply_review


def test_a_decision_checks_its_values() -> None:
    d = Decision.parse("corrected", {"center_x_mm": 40, "center_y_mm": 30, "semi_axis_a_mm": 20,
                                     "semi_axis_b_mm": 30, "angle_rad": 0.1})
    assert d.ellipse_mm is not None and (d.ellipse_mm.a, d.ellipse_mm.b) == (30.0, 20.0)  # a >= b, angle turned
    assert d.ellipse_mm.angle == pytest.approx(0.1 + math.pi / 2)
    assert Decision.parse("corrected", {"hc_mm": 171.0}).hc_mm == 171.0
    assert Decision.parse("accepted", {}, "ok").note == "ok"
    for fields, words in (({"hc_mm": float("nan")}, "finite"), ({"hc_mm": 900}, "outside"),
                          ({"center_x_mm": 1, "center_y_mm": 1, "semi_axis_a_mm": 0, "semi_axis_b_mm": 5,
                            "angle_rad": 0}, "semi-axes"),
                          ({"center_x_mm": 1e6, "center_y_mm": 1, "semi_axis_a_mm": 30, "semi_axis_b_mm": 25,
                            "angle_rad": 0}, "not on any image"),
                          ({"hc_mm": True}, "finite")):
        with pytest.raises(ReviewRefused, match=words):
            Decision.parse("corrected", fields)
    with pytest.raises(ReviewRefused, match="only a 'corrected'"):
        Decision(ReviewDecision.REJECTED_NOT_HEAD, hc_mm=170.0)


def test_a_correction_is_measured_as_the_pipeline_measures(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = get_settings().database_url
    (scan,) = store_flagged_scans(url, tmp_path / "scans", 1, ga_days=150.0)
    e = Ellipse.make(scan.ellipse_mm.cx + 1, scan.ellipse_mm.cy, 27.0, 22.0, 0.4)
    with session_scope(url) as session:
        row = session.get(Measurement, scan.id)
        assert row is not None
        review = apply_review(session, row, "alice", Decision(ReviewDecision.CORRECTED, e), "intergrowth")
        sizes = head_sizes(e)
        assert (review.hc_mm, review.bpd_mm, review.ofd_mm) == (round(sizes.hc_mm, 2), round(sizes.bpd_mm, 2),
                                                               round(sizes.ofd_mm, 2))
        assert review.hc_centile == pytest.approx(hc_centile(sizes.hc_mm, 150.0, "intergrowth").centile)
        failed = Measurement(sop_instance_uid="9.9", frame=1, model_version="m" * 64, status="failed",
                             reason="no_head_found")
        session.add(failed)
        session.flush()
        with pytest.raises(ReviewRefused, match="no outcome to accept"):
            apply_review(session, failed, "alice", Decision(ReviewDecision.ACCEPTED), "intergrowth")
        apply_review(session, failed, "alice", Decision(ReviewDecision.REJECTED_UNUSABLE), "intergrowth")


def test_a_report_after_the_review_dates_the_reviewed_hc(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = get_settings().database_url
    (scan,) = store_flagged_scans(url, tmp_path / "scans", 1, ga_days=None, patient_id="P1")
    with session_scope(url) as session:
        row = session.get(Measurement, scan.id)
        assert row is not None and row.ga_days is None
        apply_review(session, row, "alice", Decision(ReviewDecision.CORRECTED, hc_mm=scan.hc_mm + 15), "intergrowth")
    with session_scope(url) as session:
        row = session.get(Measurement, scan.id)
        assert row is not None and row.reviewed_hc_centile is None  # no GA yet
        study, day = row.study_instance_uid, row.study_date
    assert study is not None and day is not None
    report = write_ob_report(tmp_path / "report.dcm", study_uid=study, study_date=day,
                             edd=day + dt.timedelta(days=280 - 140), fetuses=(Fetus(hc_mm=150.0),), patient_id="P1")
    assert main(["process", "--json", str(report)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["reason"] == "ob_report"
    with session_scope(url) as session:
        row = session.scalars(select(Measurement).where(Measurement.id == scan.id)).one()
        assert (row.ga_source, row.ga_days) == ("report_edd", 140.0)
        assert row.reviewed_hc_centile == pytest.approx(hc_centile(scan.hc_mm + 15, 140.0).centile, abs=1e-3)
        assert row.reviewed_hc_centile > row.hc_centile


def test_fetalhc_results_shows_the_effective_values_and_who_confirmed_them(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = get_settings().database_url
    scans = store_flagged_scans(url, tmp_path / "scans", 3)
    with session_scope(url) as session:
        for scan, decision in zip(scans, (Decision(ReviewDecision.CORRECTED, hc_mm=150.25),
                                          Decision(ReviewDecision.REJECTED_UNUSABLE))):
            row = session.get(Measurement, scan.id)
            assert row is not None
            apply_review(session, row, "bob", decision, "intergrowth")
    assert main(["results", "--json"]) == 0
    rows = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (rows[scans[0].id]["effective_hc_mm"], rows[scans[0].id]["confirmed"]) == (150.25, True)
    assert rows[scans[0].id]["hc_mm"] != 150.25 and rows[scans[0].id]["reviewed_by"] == "bob"
    assert (rows[scans[1].id]["effective_status"], rows[scans[1].id]["effective_hc_mm"]) == ("rejected", None)
    assert (rows[scans[2].id]["effective_hc_mm"], rows[scans[2].id]["confirmed"]) == (rows[scans[2].id]["hc_mm"], False)
    assert main(["results", "--csv"]) == 0
    assert "effective_hc_mm" in capsys.readouterr().out.splitlines()[0]
    assert main(["results"]) == 0
    table = capsys.readouterr().out
    assert "effective_hc_mm" in table and "150.2" in table and "corrected" in table and "bob" in table
    chart = tmp_path / "hc.png"
    assert main(["results", "--chart", str(chart)]) == 0 and chart.is_file()
