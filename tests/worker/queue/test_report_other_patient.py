"""A report naming a study of another patient changes none of its rows (issue 21, item 4), on PostgreSQL.

An image of patient A is received by the listener and measured by the task; then an OB-GYN SR with A's study UID
but patient B's ID (and one with A's ID but another issuer) arrives the same way. Neither may change A's GA,
centile or sonographer's HC: each is recorded (the report's job ``report_other_patient``, a conflict with both
patients' IDs in the database, none in the log); A's own report then applies as before.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from db import Job, Measurement, session_scope
from db.conflicts import list_conflicts
from dicom_io.ob_report import COMPREHENSIVE_SR
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.dicom_io.ob_reports import Fetus, write_ob_report
from tests.worker.ingest_support import free_port, make_settings
from worker.ingest.listener import start_listener

DAY = dt.date(2026, 3, 2)
EDD = dt.date(2026, 7, 20)
PATIENT_A, PATIENT_B = "PHI-MOTHER-A-31", "PHI-MOTHER-B-77"


def _store(port: int, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(COMPREHENSIVE_SR, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def _issuer(path: Path, issuer: str) -> Path:
    ds = pydicom.dcmread(path)
    ds.IssuerOfPatientID = issuer
    ds.save_as(path)
    return path


def test_a_report_of_another_patient_changes_nothing_and_is_recorded(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from worker.queue.tasks import measure

    caplog.set_level(logging.INFO)
    settings = make_settings(monkeypatch, redis_url, pg_url, tmp_path)
    study = generate_uid()
    phantom = make_phantom(shape=(240, 320), hc_mm=170.0, spacing_mm=0.2, seed=3)
    image = _issuer(write_us_image(tmp_path / "image.dcm", phantom.image, phantom.spacing_mm,
                                   identity=ScanIdentity(patient_id=PATIENT_A, study_date=DAY, study_uid=study)),
                    "HOSPITAL-A")
    hostile = write_ob_report(tmp_path / "b.dcm", study_uid=study, study_date=DAY, edd=EDD - dt.timedelta(days=40),
                              fetuses=(Fetus(hc_mm=250.0),), patient_id=PATIENT_B)
    other_issuer = _issuer(write_ob_report(tmp_path / "a_elsewhere.dcm", study_uid=study, study_date=DAY,
                                           edd=EDD - dt.timedelta(days=60), fetuses=(Fetus(hc_mm=90.0),),
                                           patient_id=PATIENT_A), "HOSPITAL-B")
    own = write_ob_report(tmp_path / "a.dcm", study_uid=study, study_date=DAY, edd=EDD, fetuses=(Fetus(hc_mm=171.0),),
                          patient_id=PATIENT_A)
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        assert _store(port, [image, hostile, other_issuer]) == [0, 0, 0]
        with session_scope(pg_url) as s:
            jobs = [(j.id, j.path) for j in s.scalars(select(Job).order_by(Job.id))]
        results = [measure.run(job_id, path, None) for job_id, path in jobs]
        assert results[0]["status"] in ("measured", "needs_review")
        with session_scope(pg_url) as s:
            [row] = s.scalars(select(Measurement)).all()
            before = (row.ga_source, row.ga_days, row.hc_centile, row.sonographer_hc_mm, row.fetus_count)
        assert before[0] == "none" and before[3] is None  # nothing from either report
        assert [(r["status"], r["reason"]) for r in results[1:]] == [("done", "report_other_patient")] * 2
        with session_scope(pg_url) as s:
            report_jobs = list(s.scalars(select(Job).where(Job.id.in_([j for j, _ in jobs[1:]])).order_by(Job.id)))
            assert [j.reason for j in report_jobs] == ["report_other_patient"] * 2
            assert all("belong to another patient" in (j.detail or "") for j in report_jobs)
            conflicts = list_conflicts(s)
        assert sorted((c["reason"], c["patient_id_existing"], c["patient_id_received"]) for c in conflicts) == [
            ("report_other_patient", PATIENT_A, PATIENT_A), ("report_other_patient", PATIENT_A, PATIENT_B)]
        assert all(c["study_instance_uid"] == study for c in conflicts)

        assert _store(port, [own]) == [0]  # the patient's own report: applied as before
        with session_scope(pg_url) as s:
            job_id, path = s.execute(select(Job.id, Job.path).order_by(Job.id.desc()).limit(1)).one()
        assert (measure.run(job_id, path, None)["reason"]) == "ob_report"
        with session_scope(pg_url) as s:
            [row] = s.scalars(select(Measurement)).all()
            assert (row.ga_source, row.ga_days, row.sonographer_hc_mm, row.fetus_count) == ("report_edd", 140.0,
                                                                                            171.0, 1)
            assert row.issuer_of_patient_id == "HOSPITAL-A"
    finally:
        server.shutdown()
    assert PATIENT_A not in caplog.text and PATIENT_B not in caplog.text
