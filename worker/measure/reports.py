"""A scanner's OB-GYN report (DICOM SR, TID 5000) where a scan arrives: recorded, never measured; the report facts
(GA from its dating, HC z-score and centile, the sonographer's HC and the difference, fetus count) of the study's rows.

Reports and images come in either order:

* an image measured after its study's report gets the report facts as its row is stored (``apply_report_facts``);
* a report recorded after its study's images fills the facts of their stored rows (``refresh_study``);
* the sweep (``refresh_owing``) fills rows that a report and an image raced past (each committed before the
  other's look-up), bounded per sweep.

A report applies only to rows of its own patient (``db.conflicts.same_patient``: Patient ID, and issuer and birth
date where both have one): each row reads only its own patient's reports of the study. A report naming a study of
another patient changes none of its rows; that is recorded as a conflict (``report_other_patient``: both patients'
IDs in ``intake_conflicts``, never in a log) and as the reason of the report's job.

A GA given with the job is never replaced; otherwise the report's dating wins over the image header's LMP
(``worker.measure.dating.ga_for_centile``). Where the report counts several fetuses, no sonographer's HC is
put on a row (an image does not say which fetus it shows), only ``fetus_count``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db import (
    JobStatus,
    record_malformed_report,
    session_scope,
    set_job_status,
    set_report_facts,
    studies_owing_report_facts,
    study_dating,
    study_fetus_count,
    study_measured_rows,
    study_sonographer_hc,
    upsert_ob_report,
)
from db.conflicts import PatientIdentity, record_conflict, same_patient
from db.report_facts import row_patient
from db.rows import MeasurementRow
from db.tables import ConflictReason
from dicom_io.errors import DicomError, MalformedReportError
from dicom_io.ob_report import OB_REPORT_SOP_CLASSES, is_ob_report, parse_ob_report
from dicom_io.reader import read_dataset, read_instance_identity, read_sop_identity
from models.errors import FetalHCError
from worker.measure.dating import ga_for_centile, growth_facts
from worker.measure.review import reviewed_growth

log = logging.getLogger(__name__)

SWEEP_STUDIES = 50  # studies whose rows one sweep fills at most


@dataclass(frozen=True)
class ReportOutcome:
    """What became of an SR that arrived where scans do (its job, when it has one, is finished ``done``).

    ``reason``: ``ob_report`` (recorded), ``report_other_patient`` (recorded, but the study's measured rows belong
    to another patient: none changed, a conflict recorded), ``malformed_report`` (recorded by its UIDs as malformed,
    or only on the job when it has none) or ``not_ob_report`` (an SR that is no OB-GYN report: nothing to record
    or measure).
    """

    path: str
    job_id: int | None
    reason: str
    detail: str
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    rows_updated: int = 0

    def summary(self) -> dict[str, Any]:
        """The outcome as the CLI's and the task's JSON give it (no patient data)."""
        return {"path": self.path, "job_id": self.job_id, "status": "report", "reason": self.reason,
                "detail": self.detail, "sop_instance_uid": self.sop_instance_uid, "rows_updated": self.rows_updated}


def sr_header(path: Path) -> Any:
    """The header of a file in one of the SR storage classes a TID 5000 report is stored in; None otherwise.

    Cheap for images: only group 0008 is read to find the (0008,0016) SOP Class UID. An unreadable file is
    None too (the measuring path records why it cannot be read). An SR whose header cannot be parsed (a content
    tree nested deeper than the parser goes, a malformed element) is a ``MalformedReportError`` (returned, not
    raised) with the UIDs its first groups give, so that it is recorded as a malformed report.
    """
    try:
        sop_class, _ = read_sop_identity(path)
        if sop_class not in OB_REPORT_SOP_CLASSES:
            return None
        try:
            return read_dataset(path, stop_before_pixels=True)
        except DicomError as exc:
            identity = read_instance_identity(path)  # groups up to 0020 only: the content tree is not parsed
            return MalformedReportError(f"its header cannot be parsed ({exc.reason})", identity.sop_instance_uid,
                                        identity.study_instance_uid)
    except (FetalHCError, OSError):  # a missing or unreadable file: the measuring path says why (missing_file...)
        return None


def record_report(database_url: str, growth_standard: str, path: Path, job_id: int | None, header: Any) -> ReportOutcome:
    """Record an SR header (``sr_header``) as a report, fill its study's stored rows, finish its job ``done``.

    Database errors propagate (transient: the caller retries; the upserts make a retry harmless).
    """
    where = str(path)
    if isinstance(header, MalformedReportError):
        return _record_malformed(database_url, where, job_id, header)
    if not is_ob_report(header):
        outcome = ReportOutcome(where, job_id, "not_ob_report",
                                "a DICOM SR that is not an OB-GYN ultrasound report (CID 12024 title / TID 5000): "
                                "nothing to measure or record",
                                sop_instance_uid=str(header.get("SOPInstanceUID", "") or "") or None)
        with session_scope(database_url) as session:
            _finish(session, outcome)
        return outcome
    try:
        report = parse_ob_report(header)
    except MalformedReportError as exc:
        return _record_malformed(database_url, where, job_id, exc)
    with session_scope(database_url) as session:
        upsert_ob_report(session, report, path=where)
        updated = refresh_study(session, report.study_instance_uid, growth_standard)
        others = _other_patients(session, report, where, job_id)
        dating = "EDD" if report.edd else "LMP" if report.lmp else "no dating"
        detail = (f"OB-GYN report recorded ({dating}, {report.number_of_fetuses} fetus(es)"
                  f"{'; ' + '; '.join(report.notes) if report.notes else ''}); {updated} measurement(s) of the "
                  "study updated")
        if others:
            detail += (f"; {others} measurement(s) of the study belong to another patient than the report's: none "
                       "of them changed (intake_conflicts)")
        outcome = ReportOutcome(where, job_id, "report_other_patient" if others else "ob_report", detail,
                                report.sop_instance_uid, report.study_instance_uid, updated)
        _finish(session, outcome)
    log.info("OB-GYN report recorded (job=%s, %d rows updated, %d of another patient left alone)", job_id, updated,
             others)
    return outcome


def _other_patients(session: Session, report: Any, path: str, job_id: int | None) -> int:
    """Record a conflict for each other patient whose rows the report's study holds; how many rows they are."""
    mine = PatientIdentity.of(report.patient_id, report.issuer_of_patient_id, report.patient_birth_date)
    others: dict[str, int] = {}
    for m in study_measured_rows(session, report.study_instance_uid):
        theirs = row_patient(m)
        if not same_patient(theirs, mine):
            others[theirs.patient_id] = others.get(theirs.patient_id, 0) + 1
    for patient_id, count in others.items():
        record_conflict(session, sop_instance_uid=report.sop_instance_uid, study_instance_uid=report.study_instance_uid,
                        source="report", reason=ConflictReason.REPORT_OTHER_PATIENT.value,
                        detail=f"an OB-GYN report of another patient names this study: {count} measurement(s) left "
                               "unchanged", kept_path=path, patient_id_existing=patient_id,
                        patient_id_received=mine.patient_id, job_id=job_id)
    return sum(others.values())


def _record_malformed(database_url: str, where: str, job_id: int | None, exc: MalformedReportError) -> ReportOutcome:
    """Record a report that cannot be read as malformed (by its UIDs when it has them) and finish its job."""
    with session_scope(database_url) as session:
        kept = exc.sop_instance_uid and record_malformed_report(
            session, exc.sop_instance_uid, exc.study_instance_uid, exc.reason, str(exc), path=where) is None
        note = ("; a readable copy of this report was recorded before and is kept" if kept else
                "" if exc.sop_instance_uid else "; no SOP Instance UID: recorded on this job only, file kept")
        outcome = ReportOutcome(where, job_id, exc.reason, f"OB-GYN report not readable: {exc}{note}",
                                exc.sop_instance_uid or None, exc.study_instance_uid or None)
        _finish(session, outcome)
    log.warning("OB-GYN report recorded as malformed (job=%s)", job_id)
    return outcome


def _finish(session: Session, outcome: ReportOutcome) -> None:
    if outcome.job_id is not None:
        set_job_status(session, outcome.job_id, JobStatus.DONE, reason=outcome.reason, detail=outcome.detail,
                       sop_instance_uid=outcome.sop_instance_uid)


def report_facts(session: Session, study_uid: str | None, hc_mm: float, study_date: dt.date | None,
                 ga_source: str | None, growth_standard: str,
                 patient: PatientIdentity | None = None) -> dict[str, Any]:
    """The columns the study's report gives a row with an HC; empty when the study has no read report (of
    ``patient``, the row's own, when given: another patient's report gives nothing).

    A ``given`` GA is kept (its centile stands); otherwise the report's dating, when it has one, replaces
    the header's LMP and its growth facts are computed again.
    """
    if not study_uid:
        return {}
    fetus_count = study_fetus_count(session, study_uid, patient)
    if fetus_count is None:
        return {}
    values: dict[str, Any] = {"fetus_count": fetus_count}
    if ga_source != "given":
        dating = study_dating(session, study_uid, patient)
        ga = ga_for_centile(None, None, study_date, dating)
        if ga.source != "none":
            values.update(growth_facts(hc_mm, ga, growth_standard).columns())
    sonographer = study_sonographer_hc(session, study_uid, patient=patient)  # None for twins: no fetus is named
    values["sonographer_hc_mm"] = None if sonographer is None else sonographer.hc_mm
    values["hc_diff_mm"] = None if sonographer is None else round(hc_mm - sonographer.hc_mm, 2)
    return values


def apply_report_facts(session: Session, row: MeasurementRow, growth_standard: str) -> MeasurementRow:
    """The row as it is to be stored, with its study's report facts when it has an HC and the study a report."""
    if row.hc_mm is None or not row.study_instance_uid:
        return row
    patient = PatientIdentity.of(row.patient_id, row.issuer_of_patient_id, row.patient_birth_date)
    values = report_facts(session, row.study_instance_uid, row.hc_mm, row.study_date, row.ga_source, growth_standard,
                          patient=patient)
    return row.replace(**values) if values else row


def refresh_study(session: Session, study_uid: str, growth_standard: str) -> int:
    """Fill the report facts of the study's stored rows with an HC, each from its own patient's reports; how many
    rows were written."""
    rows = study_measured_rows(session, study_uid)
    if not rows:
        return 0
    updated = 0
    for m in rows:  # each row from its own patient's reports only
        values = report_facts(session, study_uid, m.hc_mm, m.study_date, m.ga_source, growth_standard,
                              patient=row_patient(m))
        if values:
            if "ga_days" in values:  # a person's reviewed HC gets the new GA's centile too
                values.update(reviewed_growth(m, values["ga_days"], values.get("ga_source"), growth_standard))
            set_report_facts(session, m.id, values)
            updated += 1
    return updated


def refresh_owing(database_url: str, growth_standard: str, limit: int = SWEEP_STUDIES) -> int:
    """Fill the rows still owing their study's report facts (``db.studies_owing_report_facts``); rows written."""
    with session_scope(database_url) as session:
        studies = studies_owing_report_facts(session, limit)
        return sum(refresh_study(session, uid, growth_standard) for uid in studies)
