"""Reads and idempotent writes of measurements and jobs (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.reviews import EFFECTIVE_COLUMNS, effective_values, heads_only
from db.tables import (
    FINISHED_JOB_STATUSES,
    MEASUREMENT_COLUMNS,
    UNFINISHED_JOB_STATUSES,
    Job,
    JobStatus,
    Measurement,
    MeasurementStatus,
    SrStatus,
)

_KEY = ("sop_instance_uid", "frame", "model_version")
_NOT_UPDATED = {"id", "created_at", *_KEY}

MEASUREMENT_ORDERS = ("study_date", "newest")  # query_measurements(order=...)
ROW_DICT_FIELDS: tuple[str, ...] = (*MEASUREMENT_COLUMNS, *EFFECTIVE_COLUMNS)  # row_dict's keys, in order


def _stamped(values: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A measurement's values checked (known columns, the key present) and stamped with the write's time.

    Raises:
        ValueError: a key column is missing, or a column name is unknown.
    """
    unknown = set(values) - set(MEASUREMENT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown measurement columns: {sorted(unknown)}")
    missing = [k for k in _KEY if values.get(k) in (None, "")]
    if missing:
        raise ValueError(f"a measurement needs {', '.join(missing)}")
    row = {**values, "updated_at": now}
    row.setdefault("created_at", now)
    return row


def upsert_measurement(session: Session, values: Mapping[str, Any]) -> None:
    """Insert the row for (SOP Instance UID, frame, model version) or update it in place.

    An instance keeps one result per model: a row of another frame of the same instance and model
    (a cine measured again with another ``FETALHC_MAX_FRAMES``) is deleted in the same transaction,
    except that a failure never replaces a measurement (then nothing is written).

    Raises:
        ValueError: a key column is missing, or a column name is unknown.
    """
    row = _stamped(values, dt.datetime.now(dt.timezone.utc))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(Measurement).values(**row)
    elif dialect == "sqlite":
        stmt = sqlite.insert(Measurement).values(**row)
    else:  # pragma: no cover - other databases are not supported
        raise ValueError(f"unsupported database dialect {dialect!r}; use PostgreSQL or SQLite")
    if not _replace_other_frames(session, dialect, row):
        return
    changes = {k: stmt.excluded[k] for k in row if k not in _NOT_UPDATED}
    # A failure never replaces a measurement of the same instance (a truncated re-send of a scan
    # that was measured keeps its measurement); anything else is replaced by the newer write.
    keep_measured = or_(Measurement.status == MeasurementStatus.FAILED.value,
                        stmt.excluded.status != MeasurementStatus.FAILED.value)
    session.execute(stmt.on_conflict_do_update(index_elements=list(_KEY), set_=changes, where=keep_measured))


def _replace_other_frames(session: Session, dialect: str, row: Mapping[str, Any]) -> bool:
    """Delete the rows of other frames of ``row``'s instance and model that ``row`` replaces.

    False when ``row`` is a failure and a measurement of another frame stays (``row`` is not written).
    PostgreSQL: a transaction-scoped advisory lock on (instance, model) first, so two transactions
    writing different frames of one instance take turns (the second then sees and deletes the first's
    row). SQLite: the DELETE comes first and takes the database's write lock for the transaction.
    """
    uid, version = str(row["sop_instance_uid"]), str(row["model_version"])
    if dialect == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(uid), func.hashtext(version))))
    others = and_(Measurement.sop_instance_uid == uid, Measurement.model_version == version,
                  Measurement.frame != row["frame"])
    failed = MeasurementStatus.FAILED.value
    if row.get("status") != failed:
        session.execute(delete(Measurement).where(others))
        return True
    session.execute(delete(Measurement).where(others, Measurement.status == failed))
    kept = session.scalar(select(func.count()).select_from(Measurement).where(others))
    return not kept


def upsert_measurements(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """``upsert_measurement`` of many rows in a few statements (a batch's rows in its one transaction).

    The other frames of each row's instance and model are deleted in one statement (failures: only failed
    frames, and a failure whose instance keeps a measurement of another frame is not written), then the rows are
    upserted with one executemany per set of columns. Rows of the same instance and model within the batch are
    written one by one, in order, as ``upsert_measurement`` would.

    Raises:
        ValueError: a key column is missing, or a column name is unknown.
    """
    keys = [(str(r.get("sop_instance_uid")), str(r.get("model_version"))) for r in rows]
    if len(set(keys)) < len(keys):
        for row in rows:
            upsert_measurement(session, row)
        return
    now = dt.datetime.now(dt.timezone.utc)
    prepared = [_stamped(values, now) for values in rows]
    if not prepared:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - other databases are not supported
        raise ValueError(f"unsupported database dialect {dialect!r}; use PostgreSQL or SQLite")
    if dialect == "postgresql":  # as _replace_other_frames, in one order so that two batches cannot deadlock
        for uid, version in sorted(set(keys)):
            session.execute(select(func.pg_advisory_xact_lock(func.hashtext(uid), func.hashtext(version))))
    failed = MeasurementStatus.FAILED.value
    key = tuple_(Measurement.sop_instance_uid, Measurement.model_version)
    key_frame = tuple_(Measurement.sop_instance_uid, Measurement.model_version, Measurement.frame)
    written = [r for r in prepared if r.get("status") != failed]
    failures = [r for r in prepared if r.get("status") == failed]
    if written:
        session.execute(delete(Measurement).where(
            key.in_([(r["sop_instance_uid"], r["model_version"]) for r in written]),
            key_frame.not_in([(r["sop_instance_uid"], r["model_version"], r["frame"]) for r in written])))
    if failures:
        mine = [(r["sop_instance_uid"], r["model_version"]) for r in failures]
        others = [key.in_(mine), key_frame.not_in([(r["sop_instance_uid"], r["model_version"], r["frame"])
                                                   for r in failures])]
        session.execute(delete(Measurement).where(*others, Measurement.status == failed))
        kept = set(session.execute(select(Measurement.sop_instance_uid, Measurement.model_version).where(*others)))
        written += [r for r in failures if (r["sop_instance_uid"], r["model_version"]) not in kept]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in written:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for columns, group in groups.items():
        stmt = (postgresql.insert(Measurement) if dialect == "postgresql" else sqlite.insert(Measurement))
        changes = {k: stmt.excluded[k] for k in columns if k not in _NOT_UPDATED}
        keep_measured = or_(Measurement.status == failed, stmt.excluded.status != failed)
        session.execute(stmt.on_conflict_do_update(index_elements=list(_KEY), set_=changes, where=keep_measured),
                        group)


def pending_reports(session: Session, older_than: dt.timedelta, limit: int) -> list[Measurement]:
    """Up to ``limit`` measured or needs_review rows whose SR is still ``pending``, untouched for ``older_than``.

    Least recently updated first, so rows whose SR keeps failing to send take turns with the others.
    """
    cutoff = dt.datetime.now(dt.timezone.utc) - older_than
    stmt = select(Measurement).where(
        Measurement.sr_status == SrStatus.PENDING.value, Measurement.updated_at < cutoff,
        Measurement.status.in_([MeasurementStatus.MEASURED.value, MeasurementStatus.NEEDS_REVIEW.value]),
    ).order_by(Measurement.updated_at, Measurement.id).limit(limit)
    return list(session.scalars(stmt))


def set_sr_status(session: Session, keys: Iterable[tuple[str, int, str]], status: SrStatus) -> int:
    """Set ``sr_status`` of the ``pending`` rows with these (SOP Instance UID, frame, model version) keys.

    ``pending`` again (a send that failed) only updates the rows' ``updated_at``: the sweep then tries
    them after the others. Returns the number of rows changed.
    """
    keys = list(keys)
    if not keys:
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    stmt = update(Measurement).where(
        tuple_(Measurement.sop_instance_uid, Measurement.frame, Measurement.model_version).in_(keys),
        Measurement.sr_status == SrStatus.PENDING.value,
    ).values(sr_status=status.value, updated_at=now)
    return int(session.execute(stmt).rowcount or 0)


def create_job(session: Session, path: str, source: str, queue: str | None = None,
               ga_days_given: float | None = None, sop_instance_uid: str | None = None) -> int:
    """Record a scan that arrived (status ``received``); returns the job id."""
    job = Job(path=path, source=source, queue=queue, ga_days_given=ga_days_given,
              sop_instance_uid=sop_instance_uid, status=JobStatus.RECEIVED.value)
    session.add(job)
    session.flush()
    return job.id


def create_jobs(session: Session, items: Sequence[tuple[str, float | None]], source: str,
                queue: str | None = None) -> list[int]:
    """Record many arrived scans (status ``received``) in one INSERT ... RETURNING; their ids, in order.

    ``items``: (path, GA days given or None). SQLAlchemy 2's insertmanyvalues sends the rows as one
    multi-row statement (in pages, on PostgreSQL and SQLite alike); ``sort_by_parameter_order``
    returns the ids in the order of ``items``.
    """
    if not items:
        return []
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"path": path, "source": source, "queue": queue, "ga_days_given": ga, "sop_instance_uid": None,
             "status": JobStatus.RECEIVED.value, "attempts": 0, "received_at": now, "updated_at": now}
            for path, ga in items]
    stmt = insert(Job).returning(Job.id, sort_by_parameter_order=True)
    return list(session.scalars(stmt, rows))


def mark_jobs_queued(session: Session, job_ids: Sequence[int]) -> int:
    """Move the still ``received`` jobs among ``job_ids`` to ``queued`` in one UPDATE; returns how many moved.

    Jobs a fast worker already took (running, finished) are left as they are, as ``set_job_status``
    with ``only_from=(RECEIVED,)`` does for one.
    """
    if not job_ids:
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    stmt = update(Job).where(Job.id.in_(list(job_ids)), Job.status == JobStatus.RECEIVED.value).values(
        status=JobStatus.QUEUED.value, queued_at=now, updated_at=now, reason=None, detail=None)
    return int(session.execute(stmt).rowcount or 0)


def set_job_status(session: Session, job_id: int, status: JobStatus, reason: str | None = None,
                   detail: str | None = None, sop_instance_uid: str | None = None,
                   only_from: Sequence[JobStatus] | None = None) -> None:
    """Move a job to ``status`` with timestamps; ``running`` counts an attempt.

    ``only_from``: change the job only while it is in one of these statuses (so marking a job
    ``queued`` after publishing cannot overwrite a fast worker's ``running`` or ``done``).
    """
    now = dt.datetime.now(dt.timezone.utc)
    values: dict[str, Any] = {"status": status.value, "updated_at": now}
    if status is JobStatus.QUEUED:
        values["queued_at"] = now
    elif status is JobStatus.RUNNING:
        values["started_at"] = now
        values["attempts"] = Job.attempts + 1
    elif status in FINISHED_JOB_STATUSES:
        values["finished_at"] = now
    if reason is not None or status in (JobStatus.DONE, JobStatus.NEEDS_REVIEW, JobStatus.QUEUED, JobStatus.RUNNING):
        values["reason"] = reason
        values["detail"] = detail
    if sop_instance_uid:
        values["sop_instance_uid"] = sop_instance_uid
    stmt = update(Job).where(Job.id == job_id)
    if only_from is not None:
        stmt = stmt.where(Job.status.in_([s.value for s in only_from]))
    session.execute(stmt.values(**values))


def finish_jobs(session: Session, outcomes: Sequence[tuple[int, JobStatus, str | None, str | None, str | None]]
                ) -> None:
    """``set_job_status`` of many jobs to finished statuses in one executemany UPDATE by id.

    ``outcomes``: (job id, status, reason, detail, SOP Instance UID or None) each; the status must be a finished one.
    """
    now = dt.datetime.now(dt.timezone.utc)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job_id, status, reason, detail, uid in outcomes:
        if status not in FINISHED_JOB_STATUSES:
            raise ValueError(f"finish_jobs sets finished statuses only, not {status.value}")
        values: dict[str, Any] = {"id": job_id, "status": status.value, "updated_at": now, "finished_at": now}
        if reason is not None or status in (JobStatus.DONE, JobStatus.NEEDS_REVIEW):
            values["reason"], values["detail"] = reason, detail
        if uid:
            values["sop_instance_uid"] = uid
        groups.setdefault(tuple(sorted(values)), []).append(values)
    for group in groups.values():
        session.execute(update(Job), group)


def get_job(session: Session, job_id: int) -> Job | None:
    """The job with this id."""
    return session.get(Job, job_id)


def stale_jobs(session: Session, older_than: dt.timedelta, statuses: Sequence[JobStatus] = UNFINISHED_JOB_STATUSES
               ) -> list[Job]:
    """Jobs stuck in ``statuses`` longer than ``older_than`` (by their last update)."""
    cutoff = dt.datetime.now(dt.timezone.utc) - older_than
    stmt = select(Job).where(Job.status.in_([s.value for s in statuses]), Job.updated_at < cutoff).order_by(Job.id)
    return list(session.scalars(stmt))


def pending_uids(session: Session, uids: Iterable[str]) -> set[str]:
    """Which of ``uids`` have a job not finished yet (received, queued or running)."""
    uids = list(uids)
    if not uids:
        return set()
    stmt = select(Job.sop_instance_uid).where(Job.sop_instance_uid.in_(uids), Job.status.in_(UNFINISHED_JOB_STATUSES))
    return set(session.scalars(stmt))


def count_unfinished_jobs(session: Session, source: str | None = None) -> int:
    """Jobs received, queued or running (of one ``source`` when given): the work in flight."""
    stmt = select(func.count()).select_from(Job).where(Job.status.in_(UNFINISHED_JOB_STATUSES))
    if source is not None:
        stmt = stmt.where(Job.source == source)
    return int(session.scalar(stmt) or 0)


def measured_uids(session: Session, model_version: str, uids: Iterable[str]) -> set[str]:
    """Which of ``uids`` already have a finished (measured, needs_review or not_head) row for this model."""
    uids = list(uids)
    if not uids:
        return set()
    stmt = select(Measurement.sop_instance_uid).where(
        Measurement.model_version == model_version, Measurement.sop_instance_uid.in_(uids),
        Measurement.status != "failed",
    )
    return set(session.scalars(stmt))


def query_measurements(
    session: Session, patient_id: str | None = None, study_uid: str | None = None, status: str | None = None,
    since: dt.date | None = None, until: dt.date | None = None, limit: int | None = None,
    hide_not_head: bool = False, order: str = "study_date", plane: str | None = None,
) -> list[Measurement]:
    """Measurements filtered by patient, study, status (the row's own), study date and standard plane (``plane_label``).

    ``hide_not_head``: leave out the rows that are in effect no head plane after people's reviews
    (``db.reviews.set_aside_as_not_head_sql``: the gate's ``not_head`` unless a reviewer corrected it into a head,
    and rows rejected as ``rejected_not_head``); ignored when ``status`` or ``plane`` is given.
    ``order``: ``study_date`` (oldest study first) or ``newest`` (the last measured first).
    """
    if order not in MEASUREMENT_ORDERS:
        raise ValueError(f"order={order!r}; choose one of: {', '.join(MEASUREMENT_ORDERS)}")
    stmt: Select[tuple[Measurement]] = select(Measurement)
    if patient_id:
        stmt = stmt.where(Measurement.patient_id == patient_id)
    if study_uid:
        stmt = stmt.where(Measurement.study_instance_uid == study_uid)
    if status:
        stmt = stmt.where(Measurement.status == status)
    elif hide_not_head and not plane:  # rows asked for by plane come in every status (an index of the archive)
        stmt = heads_only(stmt)
    if plane:
        stmt = stmt.where(Measurement.plane_label == plane)
    if since:
        stmt = stmt.where(Measurement.study_date >= since)
    if until:
        stmt = stmt.where(Measurement.study_date <= until)
    if order == "newest":
        stmt = stmt.order_by(Measurement.updated_at.desc(), Measurement.id.desc())
    else:
        stmt = stmt.order_by(Measurement.study_date, Measurement.id)
    if limit:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def job_counts(session: Session) -> dict[str, int]:
    """Number of jobs in each status."""
    return {status: n for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status))}


def measurement_counts(session: Session) -> dict[str, int]:
    """Number of measurement rows in each status."""
    stmt = select(Measurement.status, func.count()).group_by(Measurement.status)
    return {status: n for status, n in session.execute(stmt)}


def plane_counts(session: Session) -> dict[str, int]:
    """Number of measurement rows of each standard plane (``plane_label``; rows without one are not counted)."""
    stmt = select(Measurement.plane_label, func.count()).where(Measurement.plane_label.is_not(None)).group_by(
        Measurement.plane_label)
    return {plane: n for plane, n in session.execute(stmt)}


def job_dict(job: Job) -> dict[str, Any]:
    """A job row as a plain dict of its columns (dates as ISO strings), for JSON output."""
    out = {}
    for column in Job.__table__.columns:
        value = getattr(job, column.name)
        out[column.name] = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
    return out


def row_dict(row: Measurement) -> dict[str, Any]:
    """A measurement as a plain dict (dates as ISO strings) for JSON and CSV output: every column, then the
    ``EFFECTIVE_COLUMNS`` (the values to use after people's reviews, and whether a person confirmed them)."""
    out = {}
    for name in MEASUREMENT_COLUMNS:
        value = getattr(row, name)
        out[name] = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
    out.update(effective_values(row))
    return out
