"""OB-GYN reports through the listener and the task (called directly), on PostgreSQL; the sweep's repair."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from db import Job, Measurement, session_scope
from dicom_io.ob_report import COMPREHENSIVE_SR
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.dicom_io.ob_reports import Fetus, write_ob_report
from tests.worker.ingest_support import free_port, make_settings
from worker.ingest.listener import start_listener
from worker.measure.reports import refresh_owing

DAY = dt.date(2026, 3, 2)
EDD = dt.date(2026, 7, 20)


def test_report_and_image_through_listener_and_task_then_the_sweep_repairs_a_race(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str, tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import UltrasoundImageStorage  # type: ignore[attr-defined]

    from worker.queue.tasks import measure

    settings = make_settings(monkeypatch, redis_url, pg_url, tmp_path)
    study = generate_uid()
    phantom = make_phantom(shape=(240, 320), hc_mm=170.0, spacing_mm=0.2, seed=3)
    image = write_us_image(tmp_path / "image.dcm", phantom.image, phantom.spacing_mm,
                           identity=ScanIdentity(patient_id="P1", study_date=DAY, study_uid=study))  # the report's
    report = write_ob_report(tmp_path / "report.dcm", study_uid=study, study_date=DAY, edd=EDD,
                             fetuses=(Fetus(hc_mm=171.0),))
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(COMPREHENSIVE_SR, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
        assert assoc.is_established  # the SR context is accepted
        try:
            statuses = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in (image, report)]
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert statuses == [0, 0]

    with session_scope(pg_url) as s:  # the jobs the listener recorded (the shared Redis may be flushed by others)
        jobs = [(j.id, j.path) for j in s.scalars(select(Job).order_by(Job.id))]
    assert len(jobs) == 2
    results = [measure.run(job_id, path, None) for job_id, path in jobs]  # the image first, then the report
    assert results[0]["status"] in ("measured", "needs_review")
    assert (results[1]["status"], results[1]["reason"]) == ("done", "ob_report")
    with session_scope(pg_url) as s:
        [row] = s.scalars(select(Measurement)).all()
        assert (row.ga_source, row.ga_days, row.sonographer_hc_mm, row.fetus_count) == (
            "report_edd", 140.0, 171.0, 1)
        assert row.hc_centile is not None
        assert sorted(j.status for j in s.scalars(select(Job))) != ["failed"] * 2
        # a race: the row stored without the report's facts (as if measured while the report was recorded)
        s.execute(update(Measurement).values(ga_source="none", ga_days=None, hc_centile=None, fetus_count=None,
                                             sonographer_hc_mm=None))
    assert refresh_owing(pg_url, settings.growth_standard) == 1  # what the sweep runs
    assert refresh_owing(pg_url, settings.growth_standard) == 0  # and then owes nothing
    with session_scope(pg_url) as s:
        [row] = s.scalars(select(Measurement)).all()
        assert (row.ga_source, row.ga_days, row.fetus_count) == ("report_edd", 140.0, 1) and row.hc_centile
