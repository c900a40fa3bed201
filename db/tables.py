"""The results database: ``measurements`` (one row per instance and model, on its best frame), ``jobs``, the
scanners' OB-GYN reports (``ob_reports``, one per report instance, with ``ob_report_fetuses``), and people's
``reviews`` of measurements."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    JSON,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of fetalhc's tables."""


class JobStatus(StrEnum):
    """Life of a scan that arrived: received -> queued -> running -> done | needs_review | not_head | failed."""

    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    NEEDS_REVIEW = "needs_review"
    NOT_HEAD = "not_head"  # set aside: not a fetal head biometry plane (the head-plane gate refused it)
    FAILED = "failed"


class MeasurementStatus(StrEnum):
    """Outcome stored on a measurement row (``not_head``: no HC, set aside by the head-plane gate)."""

    MEASURED = "measured"
    NEEDS_REVIEW = "needs_review"
    NOT_HEAD = "not_head"
    FAILED = "failed"


class SrStatus(StrEnum):
    """The DICOM SR owed for a measurement row (``measurements.sr_status``; NULL: none owed).

    ``pending``: stored with the row when SR export is on and the row is measured or needs_review, so a
    worker lost between the commit and the export leaves it for the sweep; ``done``: written to
    ``FETALHC_SR_DIR`` and, with ``FETALHC_SR_DESTINATION``, stored there; ``failed``: the SR could
    not be built (source file gone, row unfit for a report): never tried again.
    """

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


# The status sets, defined once here (StrEnum members compare and bind as their strings).
UNFINISHED_JOB_STATUSES: tuple[JobStatus, ...] = (JobStatus.RECEIVED, JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED_JOB_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s not in UNFINISHED_JOB_STATUSES)
# What a scan's job becomes from its measurement row's status.
JOB_STATUS_OF: dict[MeasurementStatus, JobStatus] = {
    MeasurementStatus.MEASURED: JobStatus.DONE, MeasurementStatus.NEEDS_REVIEW: JobStatus.NEEDS_REVIEW,
    MeasurementStatus.NOT_HEAD: JobStatus.NOT_HEAD, MeasurementStatus.FAILED: JobStatus.FAILED}
# Rows that get a number (and a DICOM SR when SR export is on): measured and needs_review.
REPORTABLE_STATUSES: tuple[MeasurementStatus, ...] = (MeasurementStatus.MEASURED, MeasurementStatus.NEEDS_REVIEW)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Job(Base):
    """One scan that arrived (by listener, watch folder, backfill or the CLI) and what became of it."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, index=True)  # spool pruning and re-sent files look jobs up by path
    source: Mapped[str] = mapped_column(String(32), default="cli")  # live | watch | backfill | cli
    queue: Mapped[str | None] = mapped_column(String(32))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.RECEIVED.value, index=True)
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ga_days_given: Mapped[float | None] = mapped_column(Float)  # GA supplied with the job (manifest)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class Measurement(Base):
    """One head measured (or failed) on one frame of one instance by one model version.

    Units are in the column names. Ellipse coordinates are millimetres from the top-left of
    the calibrated region the network saw (``region_x0``/``region_y0`` in full-frame pixels).
    """

    __tablename__ = "measurements"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "frame", "model_version", name="uq_measurement_instance_frame_model"),
        Index("ix_measurements_patient_date", "patient_id", "study_date"),
        # The results queries' order (study date, then id) under a date range or a status (migration 0007).
        Index("ix_measurements_study_date", "study_date", "id"),
        Index("ix_measurements_status_date", "status", "study_date", "id"),
        Index("ix_measurements_plane_date", "plane_label", "study_date", "id"),  # rows by plane (migration 0010)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    frame: Mapped[int] = mapped_column(Integer, default=1)
    model_version: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    # (0010,0021) Issuer of Patient ID and (0010,0030) Patient's Birth Date, so that a report is applied only to
    # rows of its own patient (migration 0009; NULL on rows measured before)
    issuer_of_patient_id: Mapped[str | None] = mapped_column(String(64))
    patient_birth_date: Mapped[dt.date | None] = mapped_column(Date)
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    path: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(Integer)

    spacing_mm_x: Mapped[float | None] = mapped_column(Float)
    spacing_mm_y: Mapped[float | None] = mapped_column(Float)
    spacing_source: Mapped[str | None] = mapped_column(String(32))
    region_x0: Mapped[int | None] = mapped_column(Integer)
    region_y0: Mapped[int | None] = mapped_column(Integer)
    region_x1: Mapped[int | None] = mapped_column(Integer)
    region_y1: Mapped[int | None] = mapped_column(Integer)

    center_x_mm: Mapped[float | None] = mapped_column(Float)
    center_y_mm: Mapped[float | None] = mapped_column(Float)
    semi_axis_a_mm: Mapped[float | None] = mapped_column(Float)
    semi_axis_b_mm: Mapped[float | None] = mapped_column(Float)
    angle_rad: Mapped[float | None] = mapped_column(Float)
    hc_mm: Mapped[float | None] = mapped_column(Float)
    bpd_mm: Mapped[float | None] = mapped_column(Float)
    ofd_mm: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[float | None] = mapped_column(Float)
    hc_tta_spread_mm: Mapped[float | None] = mapped_column(Float)  # HC spread over test-time flips
    head_plane_score: Mapped[float | None] = mapped_column(Float)  # the head-plane gate's probability (0..1)
    # SonoNet-16's standard plane of the frame (models.plane.sononet.PlaneClass), its probability and all 14
    # {class: probability}: on every row whose frame was read, NULL without FETALHC_PLANE_CLASSIFIER (migration 0010)
    plane_label: Mapped[str | None] = mapped_column(String(32))
    plane_probability: Mapped[float | None] = mapped_column(Float)
    plane_probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    flags: Mapped[str | None] = mapped_column(String(256))  # comma-separated

    ga_days: Mapped[float | None] = mapped_column(Float)  # GA used for the centile
    ga_source: Mapped[str | None] = mapped_column(String(16))  # given | report_edd | report_lmp | lmp | none
    ga_estimate_days: Mapped[float | None] = mapped_column(Float)  # GA estimated from this HC
    ga_formula: Mapped[str | None] = mapped_column(String(32))
    hc_z_score: Mapped[float | None] = mapped_column(Float)
    hc_centile: Mapped[float | None] = mapped_column(Float)
    growth_standard: Mapped[str | None] = mapped_column(String(32))
    growth_flags: Mapped[str | None] = mapped_column(String(128))
    centile_reason: Mapped[str | None] = mapped_column(String(128))
    # The scanner's OB-GYN report of the study (ob_reports): the sonographer's HC of this fetus, fetalhc's HC
    # minus it, and the fetuses the report counts (NULL: no report seen for the study yet).
    sonographer_hc_mm: Mapped[float | None] = mapped_column(Float)
    hc_diff_mm: Mapped[float | None] = mapped_column(Float)
    fetus_count: Mapped[int | None] = mapped_column(Integer)

    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    read_ms: Mapped[float | None] = mapped_column(Float)
    infer_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    sr_status: Mapped[str | None] = mapped_column(String(16), index=True)  # SrStatus; NULL: no SR owed
    # The latest review of this row by a person (``reviews`` keeps every one; migration 0008): the decision, who
    # and when, and the values the reviewer confirmed (accepted: the model's; corrected: the correction's, through
    # the same biometry and growth code; rejected: none). NULL: nobody has reviewed it. The model's columns above
    # never change with a review.
    review_decision: Mapped[str | None] = mapped_column(String(24))  # ReviewDecision
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_hc_mm: Mapped[float | None] = mapped_column(Float)
    reviewed_bpd_mm: Mapped[float | None] = mapped_column(Float)
    reviewed_ofd_mm: Mapped[float | None] = mapped_column(Float)
    reviewed_ga_estimate_days: Mapped[float | None] = mapped_column(Float)
    reviewed_hc_z_score: Mapped[float | None] = mapped_column(Float)
    reviewed_hc_centile: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in Measurement.__table__.columns)


class ObReportStatus(StrEnum):
    """How a scanner's OB-GYN report was read (``ob_reports.status``).

    ``parsed``: read whole; ``partial``: read, some items left out (``detail`` lists them);
    ``malformed``: recorded by its UIDs only (``reason``/``detail`` say why), no dating from it.
    """

    PARSED = "parsed"
    PARTIAL = "partial"
    MALFORMED = "malformed"


class ObReportRow(Base):
    """One OB-GYN ultrasound report (DICOM SR, TID 5000) a scanner sent: its dating and identity.

    Dates are the report's; ``ga_days_at_report`` is the GA it states for its study date and
    ``ga_kind`` which (``lmp``: 11885-1 GA by LMP, ``composite_us``: 11888-5 Composite Ultrasound Age).
    """

    __tablename__ = "ob_reports"
    __table_args__ = (UniqueConstraint("sop_instance_uid", name="uq_ob_reports_sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))  # one row per report instance (upserts)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str | None] = mapped_column(String(64))  # migration 0009
    patient_birth_date: Mapped[dt.date | None] = mapped_column(Date)  # migration 0009
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    content_datetime: Mapped[dt.datetime | None] = mapped_column(DateTime)  # the report's own (0008,0023/0033)
    lmp: Mapped[dt.date | None] = mapped_column(Date)
    edd: Mapped[dt.date | None] = mapped_column(Date)
    edd_from_lmp: Mapped[dt.date | None] = mapped_column(Date)
    ga_days_at_report: Mapped[float | None] = mapped_column(Float)
    ga_kind: Mapped[str | None] = mapped_column(String(16))  # lmp | composite_us
    fetus_count: Mapped[int | None] = mapped_column(Integer)
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # ObReportStatus
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class ObReportFetusRow(Base):
    """The sonographer's head biometry of one fetus in one report, in millimetres."""

    __tablename__ = "ob_report_fetuses"
    __table_args__ = (UniqueConstraint("report_id", "fetus_number", name="uq_ob_report_fetus_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(Integer, ForeignKey("ob_reports.id", ondelete="CASCADE"))
    fetus_number: Mapped[int] = mapped_column(Integer)  # 1-based, in the report's order
    fetus_id: Mapped[str | None] = mapped_column(String(64))  # (11951-1, LN) Fetus ID; NULL: not named
    hc_mm: Mapped[float | None] = mapped_column(Float)
    bpd_mm: Mapped[float | None] = mapped_column(Float)
    ofd_mm: Mapped[float | None] = mapped_column(Float)


class ReviewDecision(StrEnum):
    """What a person decided about a measurement (``reviews.decision``).

    ``accepted``: the product's outcome is right (its HC, or, for a ``not_head`` row, that it is no head plane);
    ``rejected_not_head``: not a fetal head biometry plane; ``rejected_unusable``: a head plane, but no HC can be
    read from it; ``corrected``: the head is where the reviewer put the ellipse (or has the HC they typed).
    """

    ACCEPTED = "accepted"
    REJECTED_NOT_HEAD = "rejected_not_head"
    REJECTED_UNUSABLE = "rejected_unusable"
    CORRECTED = "corrected"


# Decisions after which a person stands behind the row's (reviewed) HC.
CONFIRMING_DECISIONS: tuple[ReviewDecision, ...] = (ReviewDecision.ACCEPTED, ReviewDecision.CORRECTED)
# Decisions after which the row has no HC a person stands behind (no head plane, or none to measure).
REJECTING_DECISIONS: tuple[ReviewDecision, ...] = (ReviewDecision.REJECTED_NOT_HEAD, ReviewDecision.REJECTED_UNUSABLE)


class Review(Base):
    """One decision of one named reviewer about one measurement; every decision is kept (the audit trail).

    The measurement's key (instance, frame, model version) is copied here, so the decision still says which
    image it was about after the row is replaced (``measurement_id`` then NULL on PostgreSQL). Ellipse and
    HC/BPD/OFD in mm as the reviewer confirmed them (corrected: the correction; accepted: the model's); the GA
    estimate, z-score and centile as computed for them at ``decided_at``.
    """

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("decision IN ('accepted', 'rejected_not_head', 'rejected_unusable', 'corrected')",
                        name="ck_reviews_decision"),
        Index("ix_reviews_measurement", "measurement_id", "id"),
        Index("ix_reviews_decided_at", "decided_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    measurement_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("measurements.id", ondelete="SET NULL"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    frame: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    decision: Mapped[str] = mapped_column(String(24))  # ReviewDecision
    center_x_mm: Mapped[float | None] = mapped_column(Float)
    center_y_mm: Mapped[float | None] = mapped_column(Float)
    semi_axis_a_mm: Mapped[float | None] = mapped_column(Float)
    semi_axis_b_mm: Mapped[float | None] = mapped_column(Float)
    angle_rad: Mapped[float | None] = mapped_column(Float)
    hc_mm: Mapped[float | None] = mapped_column(Float)
    bpd_mm: Mapped[float | None] = mapped_column(Float)
    ofd_mm: Mapped[float | None] = mapped_column(Float)
    ga_estimate_days: Mapped[float | None] = mapped_column(Float)
    hc_z_score: Mapped[float | None] = mapped_column(Float)
    hc_centile: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)


REVIEW_COLUMNS: tuple[str, ...] = tuple(c.name for c in Review.__table__.columns)


class ConflictReason(StrEnum):
    """Why an arrival was kept aside as a conflict (``intake_conflicts.reason``)."""

    OTHER_PATIENT = "other_patient"  # an instance already received, again, with another patient's identity
    OTHER_PIXELS = "other_pixels"  # the same patient, other pixel data
    REPORT_OTHER_PATIENT = "report_other_patient"  # an OB-GYN report naming a study of another patient


class IntakeConflict(Base):
    """An arrival that contradicts what was received before under the same UID: kept, recorded, not applied.

    An instance received again with another patient's identity or other pixels is kept beside the first copy
    (``kept_path``) and not measured, so a finished result is never replaced by someone else's data; a report
    whose patient is not the study's changes none of its rows. Both patients' IDs are here, never in a log.
    """

    __tablename__ = "intake_conflicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))  # live | watch | backfill | cli | report
    reason: Mapped[str] = mapped_column(String(32))  # ConflictReason
    detail: Mapped[str | None] = mapped_column(Text)
    kept_path: Mapped[str | None] = mapped_column(Text)  # the copy that arrived (never applied)
    existing_path: Mapped[str | None] = mapped_column(Text)  # what was there before
    patient_id_existing: Mapped[str | None] = mapped_column(String(64))
    patient_id_received: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(Integer)  # the arrival's job (failed, reason ``conflict``)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())
