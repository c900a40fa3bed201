"""The measurement rows a study's OB-GYN report speaks to: finding them, updating their report facts, agreement pairs.

``worker.measure.reports`` decides the values (GA, centile, the sonographer's HC); this module only
reads and writes the rows. A row *owes* report facts when its study has a read report and the row
has an HC but no ``fetus_count`` yet (``fetus_count`` is set on every row a report has been applied to).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.conflicts import PatientIdentity
from db.tables import REPORTABLE_STATUSES, Measurement, ObReportRow, ObReportStatus

REPORT_FACT_COLUMNS = frozenset({"ga_days", "ga_source", "ga_estimate_days", "ga_formula", "hc_z_score", "hc_centile",
                                 "growth_standard", "growth_flags", "centile_reason", "sonographer_hc_mm",
                                 "hc_diff_mm", "fetus_count",
                                 # a reviewed HC's growth facts follow the GA the report gives (db.reviews)
                                 "reviewed_hc_z_score", "reviewed_hc_centile"})


def study_measured_rows(session: Session, study_uid: str) -> list[Measurement]:
    """The study's rows with an HC (measured or needs_review), oldest first."""
    stmt = (select(Measurement)
            .where(Measurement.study_instance_uid == study_uid, Measurement.hc_mm.is_not(None),
                   Measurement.status.in_(REPORTABLE_STATUSES))
            .order_by(Measurement.id))
    return list(session.scalars(stmt))


def row_patient(row: Measurement) -> PatientIdentity:
    """The patient a stored row belongs to (Patient ID, issuer, birth date as read from its image)."""
    return PatientIdentity.of(row.patient_id, row.issuer_of_patient_id, row.patient_birth_date)


def set_report_facts(session: Session, measurement_id: int, values: Mapping[str, Any]) -> None:
    """Write a row's report facts (GA and growth columns, the sonographer's HC, ``fetus_count``) in place.

    Raises:
        ValueError: a column that is not a report fact (nothing else of a row is changed here).
    """
    unknown = set(values) - REPORT_FACT_COLUMNS
    if unknown:
        raise ValueError(f"not report-fact columns: {sorted(unknown)}")
    session.execute(update(Measurement).where(Measurement.id == measurement_id)
                    .values(**values, updated_at=dt.datetime.now(dt.timezone.utc)))


def studies_owing_report_facts(session: Session, limit: int) -> list[str]:
    """Up to ``limit`` studies with a read report and a row with an HC that has no report facts yet."""
    has_report = (select(ObReportRow.id)
                  .where(ObReportRow.study_instance_uid == Measurement.study_instance_uid,
                         ObReportRow.status != ObReportStatus.MALFORMED.value,
                         # a report of the row's own patient (db.conflicts.same_patient): another's never applies
                         func.coalesce(ObReportRow.patient_id, "") == func.coalesce(Measurement.patient_id, ""),
                         or_(ObReportRow.issuer_of_patient_id.is_(None), Measurement.issuer_of_patient_id.is_(None),
                             ObReportRow.issuer_of_patient_id == "", Measurement.issuer_of_patient_id == "",
                             ObReportRow.issuer_of_patient_id == Measurement.issuer_of_patient_id),
                         or_(ObReportRow.patient_birth_date.is_(None), Measurement.patient_birth_date.is_(None),
                             ObReportRow.patient_birth_date == Measurement.patient_birth_date))
                  .exists())
    stmt = (select(Measurement.study_instance_uid)
            .where(Measurement.fetus_count.is_(None), Measurement.hc_mm.is_not(None),
                   Measurement.status.in_(REPORTABLE_STATUSES), Measurement.study_instance_uid.is_not(None),
                   has_report)
            .group_by(Measurement.study_instance_uid)
            .order_by(func.min(Measurement.id))
            .limit(limit))
    return [uid for uid in session.scalars(stmt) if uid]


@dataclass(frozen=True)
class AgreementPair:
    """fetalhc's HC and the sonographer's for one measured image (mm), with its study date and scanner model."""

    hc_mm: float
    sonographer_hc_mm: float
    study_date: dt.date | None
    scanner_model: str | None


def study_scanner_model() -> Any:
    """A scalar subquery for a ``measurements`` row: the (0008,1090) Manufacturer's Model Name of its study's newest
    read report (NULL without one)."""
    return (select(ObReportRow.model_name)
            .where(ObReportRow.study_instance_uid == Measurement.study_instance_uid,
                   ObReportRow.status != ObReportStatus.MALFORMED.value)
            .order_by(ObReportRow.received_at.desc(), ObReportRow.id.desc())
            .limit(1).scalar_subquery())


def agreement_pairs(session: Session, since: dt.date | None = None) -> list[AgreementPair]:
    """Every stored row (measured or needs_review) with both HCs, oldest study first; ``since``: study date on or after.

    The scanner model is the (0008,1090) Manufacturer's Model Name of the study's newest read report.
    """
    model = study_scanner_model()
    stmt = (select(Measurement.hc_mm, Measurement.sonographer_hc_mm, Measurement.study_date, model)
            .where(Measurement.hc_mm.is_not(None), Measurement.sonographer_hc_mm.is_not(None),
                   Measurement.status.in_(REPORTABLE_STATUSES)))
    if since is not None:
        stmt = stmt.where(Measurement.study_date >= since)
    stmt = stmt.order_by(Measurement.study_date.nulls_last(), Measurement.id)
    return [AgreementPair(float(hc), float(son), day, name) for hc, son, day, name in session.execute(stmt)]
