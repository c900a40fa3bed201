"""OB-GYN reports through ``fetalhc process``: recorded not measured; GA, centile and the sonographer's HC on the
study's rows in either arrival order; EDD-only, LMP-only, twins, malformed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from db import Job, Measurement, ObReportRow, session_scope
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.dicom_io.ob_reports import Fetus, ob_report_dataset, write_ob_report
from worker.cli import main
from worker.core.settings import get_settings

DAY = dt.date(2026, 3, 2)
EDD = dt.date(2026, 7, 20)  # GA on DAY = 280 - 140 = 140 days
SONO_HC = 171.0


def _process(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, list[dict]]:
    code = main(["process", "--json", *map(str, paths)])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _image(path: Path, study: str, lmp: dt.date | None = None, seed: int = 3, sop_uid: str | None = None) -> Path:
    phantom = make_phantom(shape=(240, 320), hc_mm=170.0, spacing_mm=0.2, seed=seed)
    ident = ScanIdentity(patient_id="P1", study_date=DAY, study_uid=study, last_menstrual_date=lmp, sop_uid=sop_uid)
    return write_us_image(path, phantom.image, phantom.spacing_mm, identity=ident)


def _rows() -> list[Measurement]:
    with session_scope(get_settings().database_url) as s:
        return list(s.scalars(select(Measurement).order_by(Measurement.id)))


def _jobs() -> list[Job]:
    with session_scope(get_settings().database_url) as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def _check_dated_by_edd(row: Measurement) -> None:
    assert (row.ga_source, row.ga_days) == ("report_edd", 280.0 - (EDD - DAY).days)
    assert row.hc_centile is not None and row.hc_z_score is not None
    assert row.sonographer_hc_mm == SONO_HC and row.fetus_count == 1
    assert row.hc_diff_mm == pytest.approx(row.hc_mm - SONO_HC, abs=0.01)


@pytest.mark.parametrize("order", ["report_first", "images_first"])
def test_images_get_centiles_from_their_report_in_either_order(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], order: str) -> None:
    study = generate_uid()
    report = write_ob_report(tmp_path / "report.dcm", study_uid=study, study_date=DAY, edd=EDD,
                             fetuses=(Fetus(hc_mm=SONO_HC),))  # an EDD-only report
    image = _image(tmp_path / "image.dcm", study, lmp=DAY - dt.timedelta(days=100))  # header LMP: 100 days
    first, second = (report, image) if order == "report_first" else (image, report)

    code1, out1 = _process(capsys, first)
    if order == "images_first":  # measured before the report: dated by the header's LMP
        assert (out1[0]["ga_source"], out1[0]["ga_days"]) == ("lmp", 100.0)
    code2, out2 = _process(capsys, second)

    assert code1 == code2 == 0
    [row] = _rows()  # one measurement: the report is not a scan
    _check_dated_by_edd(row)
    report_out = (out1 if order == "report_first" else out2)[0]
    assert (report_out["status"], report_out["reason"]) == ("report", "ob_report")
    assert report_out["rows_updated"] == (0 if order == "report_first" else 1)
    assert sorted((j.reason or "", j.status) for j in _jobs()) == sorted([  # reason: plane_uncertain, or none
        (row.reason or "", "done" if row.status == "measured" else row.status), ("ob_report", "done")])
    with session_scope(get_settings().database_url) as s:
        [stored] = s.scalars(select(ObReportRow)).all()
        assert (stored.study_instance_uid, stored.edd, stored.status) == (study, EDD, "parsed")


def test_the_report_lmp_dates_the_rows_and_a_given_ga_is_kept(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = generate_uid()
    lmp = DAY - dt.timedelta(days=150)
    image = _image(tmp_path / "image.dcm", study)
    manifest = tmp_path / "dating.csv"
    given_uid = generate_uid()
    given = _image(tmp_path / "given.dcm", study, sop_uid=given_uid)
    manifest.write_text(f"sop_instance_uid,ga_days\n{given_uid},133\n")
    assert main(["process", "--json", "--manifest", str(manifest), str(given)]) == 0
    _process(capsys, image)
    write_ob_report(tmp_path / "report.dcm", study_uid=study, study_date=DAY, lmp=lmp, layout="vendor",
                    fetuses=(Fetus(hc_mm=SONO_HC),))

    _process(capsys, tmp_path / "report.dcm")

    by_name = {Path(r.path).name: r for r in _rows()}
    assert (by_name["image.dcm"].ga_source, by_name["image.dcm"].ga_days) == ("report_lmp", 150.0)
    assert (by_name["given.dcm"].ga_source, by_name["given.dcm"].ga_days) == ("given", 133.0)  # never replaced
    assert by_name["given.dcm"].sonographer_hc_mm == SONO_HC  # the sonographer's HC still beside it


def test_twins_get_the_count_and_no_sonographer_hc(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = generate_uid()
    report = write_ob_report(tmp_path / "report.dcm", study_uid=study, study_date=DAY, edd=EDD,
                             fetuses=(Fetus("A", hc_mm=171.0), Fetus("B", hc_mm=165.0)))
    _process(capsys, report, _image(tmp_path / "image.dcm", study))

    [row] = _rows()
    assert row.fetus_count == 2
    assert row.sonographer_hc_mm is None and row.hc_diff_mm is None  # the image does not say which fetus
    assert row.ga_source == "report_edd" and row.hc_centile is not None  # the pregnancy's dating still holds


def test_a_malformed_report_is_recorded_with_its_reason_and_is_no_failed_measurement(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = ob_report_dataset(study_uid=generate_uid(), edd=EDD)
    del ds.ContentSequence  # no content tree: nothing can be read from it
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)

    code, [out] = _process(capsys, path)

    assert code == 0 and (out["status"], out["reason"]) == ("report", "malformed_report")
    assert _rows() == []  # no measurement row, failed or otherwise
    [job] = _jobs()
    assert (job.status, job.reason, job.sop_instance_uid) == ("done", "malformed_report", ds.SOPInstanceUID)
    assert "content" in job.detail.lower()
    with session_scope(get_settings().database_url) as s:
        [stored] = s.scalars(select(ObReportRow)).all()
        assert (stored.status, stored.reason, stored.path) == ("malformed", "malformed_report", str(path))
    assert path.exists()  # nothing lost: the file stays where it was


def test_an_sr_that_is_no_ob_report_is_passed_over(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.dicom_io.ob_reports import other_sr_dataset

    path = tmp_path / "other.dcm"
    other_sr_dataset().save_as(path, enforce_file_format=True)
    code, [out] = _process(capsys, path)
    assert code == 0 and out["reason"] == "not_ob_report" and _rows() == []
    assert [(j.status, j.reason) for j in _jobs()] == [("done", "not_ob_report")]
