"""People's reviews of measurements: recording a decision, the worklist, a row's history, the reviewed rows.

``worker.measure.review`` decides the values (the corrected ellipse, HC/BPD/OFD, growth facts); this module
only reads and writes rows. Every decision is a new ``reviews`` row (nothing is overwritten: the audit trail);
the measurement carries the latest one in its ``review_*``/``reviewed_*`` columns, beside the model's own values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, not_, or_, select, update
from sqlalchemy.orm import Session, aliased

from db.report_facts import study_scanner_model
from db.tables import (
    CONFIRMING_DECISIONS,
    REJECTING_DECISIONS,
    REVIEW_COLUMNS,
    Measurement,
    MeasurementStatus,
    Review,
    ReviewDecision,
)

# What results, CSV and the API show beside the stored columns: the values a reader should use (the latest
# review's, else the model's), the status they have (``reviewed``, ``rejected``, else the row's own), and whether
# a person stands behind them.
EFFECTIVE_STATUSES = (*(s.value for s in MeasurementStatus), "reviewed", "rejected")  # effective_status values
EFFECTIVE_COLUMNS = ("effective_status", "effective_hc_mm", "effective_bpd_mm", "effective_ofd_mm",
                     "effective_ga_estimate_days", "effective_hc_z_score", "effective_hc_centile", "confirmed")
# What a review writes on the measurement (its latest decision's values): Measurement column -> reviews column.
_VALUE_OF_REVIEW = {"reviewed_hc_mm": "hc_mm", "reviewed_bpd_mm": "bpd_mm", "reviewed_ofd_mm": "ofd_mm",
                    "reviewed_ga_estimate_days": "ga_estimate_days", "reviewed_hc_z_score": "hc_z_score",
                    "reviewed_hc_centile": "hc_centile"}


def record_review(session: Session, measurement: Measurement, reviewer: str, decision: ReviewDecision,
                  values: Mapping[str, Any], decided_at: dt.datetime | None = None) -> Review:
    """Add one decision about ``measurement`` and make it the row's latest; returns the new ``reviews`` row.

    ``values``: ``reviews`` columns the decision fills (ellipse and HC/BPD/OFD in mm, ``ga_estimate_days``,
    ``hc_z_score``, ``hc_centile``, ``note``); the rest stay NULL.

    Raises:
        ValueError: a name that is not a ``reviews`` value column.
    """
    fixed = {"id", "measurement_id", "sop_instance_uid", "frame", "model_version", "reviewer", "decided_at",
             "decision"}
    unknown = set(values) - (set(REVIEW_COLUMNS) - fixed)
    if unknown:
        raise ValueError(f"not review value columns: {sorted(unknown)}")
    when = decided_at or dt.datetime.now(dt.timezone.utc)
    review = Review(measurement_id=measurement.id, sop_instance_uid=measurement.sop_instance_uid,
                    frame=measurement.frame, model_version=measurement.model_version, reviewer=reviewer,
                    decided_at=when, decision=ReviewDecision(decision).value, **values)
    session.add(review)
    latest = {column: values.get(source) for column, source in _VALUE_OF_REVIEW.items()}
    session.execute(update(Measurement).where(Measurement.id == measurement.id).values(
        review_decision=review.decision, reviewed_by=reviewer, reviewed_at=when, **latest))
    session.flush()
    return review


def effective_values(row: Measurement) -> dict[str, Any]:
    """The ``EFFECTIVE_COLUMNS`` of a row: its latest review's values when a person decided, else the model's."""
    decision = row.review_decision
    model = {f"effective_{name}": getattr(row, name) for name in _VALUE_OF_REVIEW.values()}
    if decision is None:
        return {"effective_status": row.status, **model, "confirmed": False}
    reviewed = {f"effective_{source}": getattr(row, column) for column, source in _VALUE_OF_REVIEW.items()}
    if decision in REJECTING_DECISIONS:
        status = "rejected"
    elif decision == ReviewDecision.ACCEPTED and row.status == MeasurementStatus.NOT_HEAD:
        status = MeasurementStatus.NOT_HEAD.value  # the gate's verdict, confirmed
    else:
        status = "reviewed"
    return {"effective_status": status, **reviewed, "confirmed": decision in CONFIRMING_DECISIONS}


def effective_status_sql() -> ColumnElement[str]:
    """``effective_values``' ``effective_status`` as an SQL expression of a measurements row (to filter and count)."""
    decision = func.coalesce(Measurement.review_decision, "")
    return case(
        (decision.in_([d.value for d in REJECTING_DECISIONS]), "rejected"),
        (and_(decision == ReviewDecision.ACCEPTED.value, Measurement.status == MeasurementStatus.NOT_HEAD.value),
         MeasurementStatus.NOT_HEAD.value),
        (decision != "", "reviewed"),
        else_=Measurement.status)


def set_aside_as_not_head_sql() -> ColumnElement[bool]:
    """True for a row that is, in effect, no head biometry plane: the gate's ``not_head`` that no person corrected
    into a head (unreviewed, or accepted as not a head), or any row a person rejected as ``rejected_not_head``.
    These are left out of the default results; a ``not_head`` row a reviewer ``corrected`` (or judged a head
    plane too poor to measure, ``rejected_unusable``) is a head plane and comes in."""
    decision = func.coalesce(Measurement.review_decision, "")
    return or_(decision == ReviewDecision.REJECTED_NOT_HEAD.value,
               and_(Measurement.status == MeasurementStatus.NOT_HEAD.value,
                    decision.in_(["", ReviewDecision.ACCEPTED.value])))


def effective_status_counts(session: Session) -> dict[str, int]:
    """Number of measurement rows of each effective status (``reviewed`` and ``rejected`` after people's
    decisions, else the row's own status)."""
    status = effective_status_sql()
    return {name: int(n) for name, n in session.execute(select(status, func.count()).group_by(status))}


def heads_only(stmt: Select[Any]) -> Select[Any]:
    """``stmt`` without the rows set aside as no head plane (``set_aside_as_not_head_sql``)."""
    return stmt.where(not_(set_aside_as_not_head_sql()))


def review_worklist(session: Session, status: str = MeasurementStatus.NEEDS_REVIEW.value, reason: str | None = None,
                    include_reviewed: bool = False, limit: int | None = None) -> list[Measurement]:
    """Rows of ``status`` that nobody has reviewed yet (all of them with ``include_reviewed``), oldest first.

    ``reason``: only rows whose ``reason`` is it or whose ``flags`` name it (``low_confidence``,
    ``not_head_plane``...).
    """
    stmt: Select[tuple[Measurement]] = select(Measurement).where(Measurement.status == status)
    if not include_reviewed:
        stmt = stmt.where(Measurement.review_decision.is_(None))
    if reason:
        stmt = stmt.where(or_(Measurement.reason == reason,
                              (literal(",") + Measurement.flags + literal(",")).contains("," + reason + ",",
                                                                                          autoescape=True)))
    stmt = stmt.order_by(Measurement.created_at, Measurement.id)
    if limit:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def reviews_of(session: Session, measurement: Measurement) -> list[Review]:
    """Every decision about this measurement, oldest first (matched by id and by the row's key, so that a
    decision about a row since replaced never attaches to a new row that reuses its id)."""
    stmt = select(Review).where(Review.measurement_id == measurement.id,
                                Review.sop_instance_uid == measurement.sop_instance_uid,
                                Review.frame == measurement.frame,
                                Review.model_version == measurement.model_version).order_by(Review.id)
    return list(session.scalars(stmt))


def latest_review(session: Session, measurement: Measurement) -> Review | None:
    """The measurement's latest decision (None: never reviewed)."""
    reviews = reviews_of(session, measurement)
    return reviews[-1] if reviews else None


@dataclass(frozen=True)
class ReviewedRow:
    """A measurement a person confirmed (accepted or corrected) and the decision that did."""

    measurement: Measurement
    review: Review


def confirmed_rows(session: Session, since: dt.date | None = None) -> list[ReviewedRow]:
    """Rows whose latest decision accepts or corrects them, with that decision, oldest decision first.

    ``since``: decided on or after this date (UTC).
    """
    earlier = aliased(Review)
    latest = (select(earlier.id).where(earlier.measurement_id == Measurement.id)
              .order_by(earlier.id.desc()).limit(1).correlate(Measurement).scalar_subquery())
    stmt = (select(Measurement, Review)
            .join(Review, and_(Review.id == latest, Review.sop_instance_uid == Measurement.sop_instance_uid,
                               Review.frame == Measurement.frame))
            .where(Measurement.review_decision.in_([d.value for d in CONFIRMING_DECISIONS])))
    if since is not None:
        stmt = stmt.where(Review.decided_at >= dt.datetime.combine(since, dt.time(), dt.timezone.utc))
    stmt = stmt.order_by(Review.decided_at, Review.id)
    return [ReviewedRow(m, r) for m, r in session.execute(stmt)]


@dataclass(frozen=True)
class ReviewedHC:
    """One image's HC by up to three readers (mm): fetalhc's, the reviewer's (accepted: fetalhc's; corrected: the
    correction's) and the sonographer's from the study's report (None without one)."""

    hc_mm: float
    reviewer_hc_mm: float
    sonographer_hc_mm: float | None
    decision: str
    study_date: dt.date | None
    scanner_model: str | None


def reviewed_hcs(session: Session, since: dt.date | None = None) -> list[ReviewedHC]:
    """Every row with fetalhc's HC whose latest review confirms an HC, oldest study first (``since``: study date on
    or after); the scanner model as in ``db.agreement_pairs``."""
    stmt = (select(Measurement.hc_mm, Measurement.reviewed_hc_mm, Measurement.sonographer_hc_mm,
                   Measurement.review_decision, Measurement.study_date, study_scanner_model())
            .where(Measurement.hc_mm.is_not(None), Measurement.reviewed_hc_mm.is_not(None),
                   Measurement.review_decision.in_([d.value for d in CONFIRMING_DECISIONS])))
    if since is not None:
        stmt = stmt.where(Measurement.study_date >= since)
    stmt = stmt.order_by(Measurement.study_date.nulls_last(), Measurement.id)
    return [ReviewedHC(float(hc), float(rev), None if son is None else float(son), decision, day, model)
            for hc, rev, son, decision, day, model in session.execute(stmt)]


def review_dict(review: Review) -> dict[str, Any]:
    """A review as a plain dict (dates as ISO strings) for JSON."""
    out = {}
    for name in REVIEW_COLUMNS:
        value = getattr(review, name)
        out[name] = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
    return out
