"""Scanners' OB-GYN reports in the database: idempotent writes, and a study's dating and sonographer's HC from them.

The report values come from ``dicom_io.ob_report.ObReport``; this module reads them by attribute
(``ReportLike``) and imports nothing from ``dicom_io``. Rules, each in one function:

* one row per report SOP Instance UID: a report sent again replaces its row and fetuses in place;
  a malformed copy never replaces a report that was read (as for measurements, a failure never
  replaces a result);
* dating for a study (``study_dating``): the newest report with an EDD (GA = 280 - (EDD - date),
  source ``report_edd``), else the newest with an LMP (GA = date - LMP, ``report_lmp``), else None;
* the sonographer's HC (``study_sonographer_hc``): from the newest report with one for that fetus;
  without a fetus, None as soon as any report of the study has several fetuses;
* each of these, given a ``patient``, reads only that patient's reports of the study (``db.conflicts.same_patient``:
  Patient ID, and issuer and birth date where both have one), so a report naming another patient changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, and_, delete, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.conflicts import PatientIdentity
from db.tables import ObReportFetusRow, ObReportRow, ObReportStatus

GESTATION_DAYS = 280  # Naegele: EDD = LMP + 280 days, so GA on a day = 280 - (EDD - day)


class FetusLike(Protocol):
    """One fetus's biometry as ``dicom_io.ob_report.FetusBiometry`` gives it (mm)."""

    @property
    def fetus_number(self) -> int: ...
    @property
    def fetus_id(self) -> str | None: ...
    @property
    def hc_mm(self) -> float | None: ...
    @property
    def bpd_mm(self) -> float | None: ...
    @property
    def ofd_mm(self) -> float | None: ...


class ReportLike(Protocol):
    """A parsed report as ``dicom_io.ob_report.ObReport`` gives it."""

    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def study_instance_uid(self) -> str: ...
    @property
    def series_instance_uid(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def issuer_of_patient_id(self) -> str: ...
    @property
    def patient_birth_date(self) -> dt.date | None: ...
    @property
    def accession_number(self) -> str: ...
    @property
    def study_date(self) -> dt.date | None: ...
    @property
    def content_datetime(self) -> dt.datetime | None: ...
    @property
    def lmp(self) -> dt.date | None: ...
    @property
    def edd(self) -> dt.date | None: ...
    @property
    def edd_from_lmp(self) -> dt.date | None: ...
    @property
    def ga_days_at_report(self) -> float | None: ...
    @property
    def ga_kind(self) -> str | None: ...
    @property
    def fetuses(self) -> Sequence[FetusLike]: ...
    @property
    def number_of_fetuses(self) -> int: ...
    @property
    def manufacturer(self) -> str: ...
    @property
    def manufacturer_model_name(self) -> str: ...
    @property
    def notes(self) -> Sequence[str]: ...


def ga_days_from_edd(edd: dt.date, on: dt.date) -> int:
    """GA in days on ``on`` from the EDD: 280 - (EDD - on)."""
    return GESTATION_DAYS - (edd - on).days


def ga_days_from_lmp(lmp: dt.date, on: dt.date) -> int:
    """GA in days on ``on`` from the LMP: on - LMP."""
    return (on - lmp).days


@dataclass(frozen=True)
class StudyDating:
    """The dating a study's report gives: GA on the study date (days) and where it came from.

    ``source``: ``report_edd`` or ``report_lmp``; ``ga_days`` is None when the report has no study
    date (use ``ga_days_on`` with the image's own date).
    """

    study_instance_uid: str
    source: str
    study_date: dt.date | None
    ga_days: int | None
    edd: dt.date | None
    lmp: dt.date | None
    report_sop_instance_uid: str
    fetus_count: int

    def ga_days_on(self, day: dt.date) -> int:
        """GA in days on ``day`` by this dating (EDD for ``report_edd``, LMP for ``report_lmp``)."""
        if self.source == "report_edd" and self.edd is not None:
            return ga_days_from_edd(self.edd, day)
        assert self.lmp is not None
        return ga_days_from_lmp(self.lmp, day)


@dataclass(frozen=True)
class SonographerBiometry:
    """The sonographer's head biometry of one fetus from a study's report (mm)."""

    study_instance_uid: str
    report_sop_instance_uid: str
    fetus_number: int
    fetus_id: str | None
    hc_mm: float
    bpd_mm: float | None
    ofd_mm: float | None
    fetus_count: int


def _blank(value: str | None) -> str | None:
    return value or None


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise ValueError(f"unsupported database dialect {dialect!r}; use PostgreSQL or SQLite")  # pragma: no cover


def upsert_ob_report(session: Session, report: ReportLike, path: str | None = None,
                     received_at: dt.datetime | None = None) -> int:
    """Store a parsed report (status ``parsed``, or ``partial`` with its notes in ``detail``); its row id.

    Idempotent by SOP Instance UID: the row and its fetuses are replaced in place (``received_at`` and
    ``created_at`` kept from the first time), a malformed row of that UID included.
    """
    if not report.sop_instance_uid or not report.study_instance_uid:
        raise ValueError("an OB report row needs its SOP Instance UID and Study Instance UID")
    now = dt.datetime.now(dt.UTC)
    notes = list(report.notes)
    values: dict[str, Any] = {
        "sop_instance_uid": report.sop_instance_uid, "study_instance_uid": report.study_instance_uid,
        "series_instance_uid": _blank(report.series_instance_uid), "patient_id": _blank(report.patient_id),
        "issuer_of_patient_id": _blank(getattr(report, "issuer_of_patient_id", "")),
        "patient_birth_date": getattr(report, "patient_birth_date", None),
        "accession_number": _blank(report.accession_number), "study_date": report.study_date,
        "content_datetime": report.content_datetime, "lmp": report.lmp, "edd": report.edd,
        "edd_from_lmp": report.edd_from_lmp, "ga_days_at_report": report.ga_days_at_report,
        "ga_kind": None if report.ga_kind is None else str(report.ga_kind),
        "fetus_count": report.number_of_fetuses, "manufacturer": _blank(report.manufacturer),
        "model_name": _blank(report.manufacturer_model_name), "path": path,
        "status": (ObReportStatus.PARTIAL if notes else ObReportStatus.PARSED).value,
        "reason": "items_left_out" if notes else None, "detail": "; ".join(notes) or None,
        "received_at": received_at or now, "created_at": now, "updated_at": now,
    }
    stmt = _insert(session)(ObReportRow).values(**values)
    kept = {"sop_instance_uid", "received_at", "created_at"}
    stmt = stmt.on_conflict_do_update(index_elements=["sop_instance_uid"],
                                      set_={k: stmt.excluded[k] for k in values if k not in kept})
    report_id: int = session.execute(stmt.returning(ObReportRow.id)).scalar_one()
    session.execute(delete(ObReportFetusRow).where(ObReportFetusRow.report_id == report_id))
    rows = [{"report_id": report_id, "fetus_number": f.fetus_number, "fetus_id": f.fetus_id, "hc_mm": f.hc_mm,
             "bpd_mm": f.bpd_mm, "ofd_mm": f.ofd_mm} for f in report.fetuses]
    if rows:
        session.execute(insert(ObReportFetusRow), rows)
    return report_id


def record_malformed_report(session: Session, sop_instance_uid: str, study_instance_uid: str, reason: str,
                            detail: str, path: str | None = None,
                            received_at: dt.datetime | None = None) -> int | None:
    """Record a report that could not be read (status ``malformed``); its row id, or None when a report
    of that SOP Instance UID was already read (that row is kept, never replaced by a broken copy).

    Raises:
        ValueError: without a SOP Instance UID there is nothing to key the row on (log it instead).
    """
    if not sop_instance_uid:
        raise ValueError("a malformed report without a SOP Instance UID cannot be recorded")
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "sop_instance_uid": sop_instance_uid, "study_instance_uid": study_instance_uid or "",
        "status": ObReportStatus.MALFORMED.value, "reason": reason, "detail": detail, "path": path,
        "received_at": received_at or now, "created_at": now, "updated_at": now,
    }
    stmt = _insert(session)(ObReportRow).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["sop_instance_uid"],
        set_={k: stmt.excluded[k] for k in ("study_instance_uid", "reason", "detail", "path", "updated_at")},
        where=ObReportRow.status == ObReportStatus.MALFORMED.value)
    return session.execute(stmt.returning(ObReportRow.id)).scalar_one_or_none()


def get_ob_report(session: Session, sop_instance_uid: str) -> ObReportRow | None:
    """The stored report of one SOP Instance UID."""
    return session.scalars(select(ObReportRow).where(ObReportRow.sop_instance_uid == sop_instance_uid)).first()


def ob_report_fetuses(session: Session, report_id: int) -> list[ObReportFetusRow]:
    """A stored report's fetuses, in the report's order."""
    stmt = select(ObReportFetusRow).where(ObReportFetusRow.report_id == report_id)
    return list(session.scalars(stmt.order_by(ObReportFetusRow.fetus_number)))


def patient_of_report(patient: PatientIdentity) -> ColumnElement[bool]:
    """SQL: a stored report names ``patient`` (``db.conflicts.same_patient``; NULL reads as empty / not given)."""
    clauses = [func.coalesce(ObReportRow.patient_id, "") == patient.patient_id]
    if patient.issuer:
        clauses.append(or_(func.coalesce(ObReportRow.issuer_of_patient_id, "") == "",
                           ObReportRow.issuer_of_patient_id == patient.issuer))
    if patient.birth_date is not None:
        clauses.append(or_(ObReportRow.patient_birth_date.is_(None), ObReportRow.patient_birth_date == patient.birth_date))
    return and_(*clauses)


def _readable_reports(study_uid: str, patient: PatientIdentity | None = None) -> Select[tuple[ObReportRow]]:
    """The study's reports that were read (of ``patient`` when given), newest first (the report's own time, then
    arrival)."""
    stmt = select(ObReportRow).where(ObReportRow.study_instance_uid == study_uid,
                                     ObReportRow.status != ObReportStatus.MALFORMED.value)
    if patient is not None:
        stmt = stmt.where(patient_of_report(patient))
    return (stmt
            .order_by(ObReportRow.content_datetime.desc().nulls_last(), ObReportRow.received_at.desc(),
                      ObReportRow.id.desc()))


def study_fetus_count(session: Session, study_uid: str, patient: PatientIdentity | None = None) -> int | None:
    """The most fetuses any read report of the study (of ``patient`` when given) gives (None: no report read)."""
    stmt = select(func.max(ObReportRow.fetus_count)).where(
        ObReportRow.study_instance_uid == study_uid, ObReportRow.status != ObReportStatus.MALFORMED.value)
    if patient is not None:
        stmt = stmt.where(patient_of_report(patient))
    count = session.scalar(stmt)
    return None if count is None else int(count)


def study_dating(session: Session, study_uid: str, patient: PatientIdentity | None = None) -> StudyDating | None:
    """The study's dating from its reports: EDD first (``report_edd``), else LMP (``report_lmp``), else None.

    EDD is the dating the clinicians used (GA = 280 - (EDD - study date)); the newest report that has
    one wins, then the newest with an LMP (GA = study date - LMP).
    """
    reports = list(session.scalars(_readable_reports(study_uid, patient)))
    if not reports:
        return None
    fetus_count = max(r.fetus_count or 1 for r in reports)
    for source, attribute in (("report_edd", "edd"), ("report_lmp", "lmp")):
        for r in reports:
            day = getattr(r, attribute)
            if day is None:
                continue
            ga = None
            if r.study_date is not None:
                ga = ga_days_from_edd(day, r.study_date) if source == "report_edd" else ga_days_from_lmp(
                    day, r.study_date)
            return StudyDating(study_instance_uid=study_uid, source=source, study_date=r.study_date, ga_days=ga,
                               edd=r.edd if source == "report_edd" else None, lmp=r.lmp if source == "report_lmp"
                               else None, report_sop_instance_uid=r.sop_instance_uid, fetus_count=fetus_count)
    return None


def study_sonographer_hc(session: Session, study_uid: str, fetus: int | str | None = None,
                         patient: PatientIdentity | None = None) -> SonographerBiometry | None:
    """The sonographer's HC for the study (and fetus: its number, 1-based, or its Fetus ID), or None.

    None when no read report of the study has an HC for that fetus, and, without ``fetus``, when the
    study has several fetuses (any report says so): one fetus's HC is never given to another's image.
    """
    fetus_count = study_fetus_count(session, study_uid, patient)
    if fetus_count is None or (fetus is None and fetus_count > 1):
        return None
    stmt = (select(ObReportFetusRow, ObReportRow)
            .join(ObReportRow, ObReportFetusRow.report_id == ObReportRow.id)
            .where(ObReportRow.study_instance_uid == study_uid,
                   ObReportRow.status != ObReportStatus.MALFORMED.value, ObReportFetusRow.hc_mm.is_not(None)))
    if patient is not None:
        stmt = stmt.where(patient_of_report(patient))
    if isinstance(fetus, int):
        stmt = stmt.where(ObReportFetusRow.fetus_number == fetus)
    elif isinstance(fetus, str):
        stmt = stmt.where(ObReportFetusRow.fetus_id == fetus)
    stmt = stmt.order_by(ObReportRow.content_datetime.desc().nulls_last(), ObReportRow.received_at.desc(),
                         ObReportRow.id.desc(), ObReportFetusRow.fetus_number)
    found = session.execute(stmt).first()
    if found is None:
        return None
    row, report = found
    return SonographerBiometry(study_instance_uid=study_uid, report_sop_instance_uid=report.sop_instance_uid,
                               fetus_number=row.fetus_number, fetus_id=row.fetus_id, hc_mm=row.hc_mm,
                               bpd_mm=row.bpd_mm, ofd_mm=row.ofd_mm, fetus_count=fetus_count)
