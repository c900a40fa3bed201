"""OB-GYN reports through the repository, on SQLite and a real PostgreSQL: idempotent, dating, sonographer's HC."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import (
    ObReportFetusRow,
    ObReportRow,
    get_ob_report,
    ob_report_fetuses,
    record_malformed_report,
    session_scope,
    study_dating,
    study_fetus_count,
    study_sonographer_hc,
    upgrade,
    upsert_ob_report,
)
from dicom_io import MalformedReportError, parse_ob_report, read_ob_report
from tests.dicom_io.ob_reports import (
    STUDY_DATE,
    Fetus,
    ob_report_dataset,
    write_ob_report,
)

STUDY = "1.2.826.0.1.99.1"
EDD_DAY = dt.date(2026, 6, 8)  # GA 182 days on STUDY_DATE
LMP_DAY = dt.date(2025, 9, 4)  # GA 179 days on STUDY_DATE


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    return url


def test_round_trip_of_a_file_is_idempotent_by_sop_instance_uid(db_url: str, tmp_path: Path) -> None:
    path = write_ob_report(tmp_path / "r.dcm", study_uid=STUDY, sop_uid="1.2.826.0.1.99.1.1", lmp=LMP_DAY,
                           edd=EDD_DAY, ga_lmp_days=179, fetuses=(Fetus(hc_mm=171.0, bpd_mm=47.0, ofd_mm=61.0),))
    report = read_ob_report(path)
    with session_scope(db_url) as s:
        first = upsert_ob_report(s, report, path=str(path))
    with session_scope(db_url) as s:
        first_row = get_ob_report(s, report.sop_instance_uid)
        assert first_row is not None
        received = first_row.received_at
    with session_scope(db_url) as s:  # sent again: the same row, fetuses replaced, first arrival kept
        assert upsert_ob_report(s, report, path=str(path)) == first
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count()).select_from(ObReportRow)) == 1
        assert s.scalar(select(func.count()).select_from(ObReportFetusRow)) == 1
        row = get_ob_report(s, report.sop_instance_uid)
        assert row is not None and row.received_at == received
        assert (row.study_instance_uid, row.patient_id, row.study_date, row.lmp, row.edd) == (
            STUDY, "P1", STUDY_DATE, LMP_DAY, EDD_DAY)
        assert (row.ga_days_at_report, row.ga_kind, row.fetus_count, row.status, row.reason) == (
            179.0, "lmp", 1, "parsed", None)
        assert (row.manufacturer, row.model_name, row.path) == ("Acme Ultrasound", "Sono 9", str(path))
        assert row.content_datetime == dt.datetime(2026, 3, 2, 10, 15) and row.created_at is not None
        (fetus,) = ob_report_fetuses(s, row.id)
        assert (fetus.fetus_number, fetus.fetus_id, fetus.hc_mm, fetus.bpd_mm, fetus.ofd_mm) == (
            1, None, 171.0, 47.0, 61.0)


def test_dating_prefers_the_edd_then_the_lmp(db_url: str) -> None:
    with session_scope(db_url) as s:
        assert study_dating(s, STUDY) is None
        upsert_ob_report(s, parse_ob_report(ob_report_dataset(study_uid=STUDY, lmp=LMP_DAY)))
    with session_scope(db_url) as s:
        dating = study_dating(s, STUDY)
        assert dating is not None
        assert (dating.source, dating.ga_days, dating.lmp, dating.study_date) == ("report_lmp", 179, LMP_DAY,
                                                                                  STUDY_DATE)
        assert dating.ga_days_on(STUDY_DATE + dt.timedelta(days=7)) == 186
        # an EDD-only report of the same study (an older one, even): the EDD wins
        upsert_ob_report(s, parse_ob_report(ob_report_dataset(study_uid=STUDY, edd=EDD_DAY, fetuses=(),
                                                              study_date=STUDY_DATE)))
    with session_scope(db_url) as s:
        dating = study_dating(s, STUDY)
        assert dating is not None
        assert (dating.source, dating.ga_days, dating.edd) == ("report_edd", 182, EDD_DAY)  # 280 - (EDD - date)
        assert dating.ga_days_on(EDD_DAY) == 280
        assert study_dating(s, "9.9.9") is None


def test_sonographer_hc_of_one_fetus_and_of_twins(db_url: str) -> None:
    twins = "1.2.826.0.1.99.2"
    with session_scope(db_url) as s:
        upsert_ob_report(s, parse_ob_report(ob_report_dataset(study_uid=STUDY, fetuses=(Fetus(hc_mm=171.0),))))
        upsert_ob_report(s, parse_ob_report(ob_report_dataset(
            study_uid=twins, layout="vendor", edd=EDD_DAY,
            fetuses=(Fetus("A", hc_mm=171.0, bpd_mm=47.0), Fetus("B", hc_mm=158.0, units="cm")))))
    with session_scope(db_url) as s:
        single = study_sonographer_hc(s, STUDY)
        assert single is not None and (single.hc_mm, single.fetus_count, single.fetus_id) == (171.0, 1, None)
        assert study_sonographer_hc(s, twins) is None  # ambiguous: never one twin's HC for the other
        assert study_fetus_count(s, twins) == 2
        a, b = study_sonographer_hc(s, twins, fetus="A"), study_sonographer_hc(s, twins, fetus=2)
        assert a is not None and b is not None
        assert (a.fetus_number, a.hc_mm, a.bpd_mm) == (1, pytest.approx(171.0), pytest.approx(47.0))
        assert (b.fetus_id, b.hc_mm, b.fetus_count) == ("B", pytest.approx(158.0), 2)
        assert study_sonographer_hc(s, twins, fetus="C") is None
        assert study_sonographer_hc(s, "9.9.9") is None and study_fetus_count(s, "9.9.9") is None


def test_malformed_report_is_recorded_and_never_replaces_a_read_one(db_url: str) -> None:
    broken = ob_report_dataset(study_uid=STUDY, sop_uid="1.2.826.0.1.99.1.7", edd=EDD_DAY)
    del broken.ContentSequence
    with pytest.raises(MalformedReportError) as caught:
        parse_ob_report(broken)
    err = caught.value
    with session_scope(db_url) as s:
        rid = record_malformed_report(s, err.sop_instance_uid, err.study_instance_uid, err.reason, str(err))
        assert rid is not None
        assert record_malformed_report(s, err.sop_instance_uid, err.study_instance_uid, err.reason, "again") == rid
    with session_scope(db_url) as s:
        row = get_ob_report(s, err.sop_instance_uid)
        assert row is not None and (row.status, row.reason, row.detail) == ("malformed", "malformed_report", "again")
        assert study_dating(s, STUDY) is None  # nothing dated from a report that was not read
        # the complete copy arrives: it replaces the malformed row
        good = parse_ob_report(ob_report_dataset(study_uid=STUDY, sop_uid=err.sop_instance_uid, edd=EDD_DAY))
        assert upsert_ob_report(s, good) == rid
    with session_scope(db_url) as s:
        assert record_malformed_report(s, err.sop_instance_uid, STUDY, err.reason, "late broken copy") is None
    with session_scope(db_url) as s:
        row = get_ob_report(s, err.sop_instance_uid)
        assert row is not None and (row.status, row.reason, row.detail, row.edd) == ("parsed", None, None, EDD_DAY)
        dating = study_dating(s, STUDY)
        assert dating is not None and dating.source == "report_edd"
    with session_scope(db_url) as s, pytest.raises(ValueError, match="SOP Instance UID"):
        record_malformed_report(s, "", STUDY, "malformed_report", "no uid")


def test_partial_report_keeps_its_notes(db_url: str) -> None:
    from tests.dicom_io.ob_reports import FETAL_BIOMETRY, HC, container, num

    report = parse_ob_report(ob_report_dataset(study_uid=STUDY, edd=EDD_DAY, fetuses=(),
                                               extra_content=[container(FETAL_BIOMETRY, num(HC, 171.0, unit=None))]))
    with session_scope(db_url) as s:
        upsert_ob_report(s, report)
    with session_scope(db_url) as s:
        row = get_ob_report(s, report.sop_instance_uid)
        assert row is not None and (row.status, row.reason) == ("partial", "items_left_out")
        assert row.detail is not None and "no units" in row.detail
        assert ob_report_fetuses(s, row.id) == []
        dating = study_dating(s, STUDY)
        assert dating is not None and dating.ga_days == 182  # what could be read is used
