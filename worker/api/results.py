"""The stored-data handlers: results as JSON or CSV (with their filters), one job, counts by status.

Rows set aside as ``not_head`` (not a head biometry plane) are left out of the results unless
``status=not_head`` asks for them; the stats count them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select

from db import (
    Job,
    JobStatus,
    Measurement,
    MeasurementStatus,
    get_job,
    job_counts,
    query_measurements,
    row_dict,
    session_scope,
)
from db.tables import MEASUREMENT_COLUMNS
from worker.api.app import ApiApp
from worker.api.messages import API_HEADERS, ApiError, Request, Response, json_response

RESULTS_LIMIT_DEFAULT = 500  # JSON rows when no limit is given (the CSV has none)
RESULTS_LIMIT_MAX = 10_000
ORDERS = ("study_date", "newest")
# Spreadsheet programs run cells that start with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
HIDDEN_UNLESS_ASKED = (MeasurementStatus.NOT_HEAD.value,)  # statuses left out of results without ?status=


@dataclass(frozen=True)
class ResultFilters:
    """The filters of /api/results: exact patient and study, status, study-date range (inclusive)."""

    patient_id: str | None = None
    study_uid: str | None = None
    status: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None


def _parse_date(name: str, text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name}={text!r} is not a date; write YYYY-MM-DD") from None


def parse_filters(query: dict[str, str]) -> ResultFilters:
    """The result filters of a query string (400 on a malformed value)."""
    status = query.get("status") or None
    choices = [s.value for s in MeasurementStatus]
    if status is not None and status not in choices:
        raise ApiError(400, "bad_parameter", f"status={status!r}; choose one of: {', '.join(choices)}")
    filters = ResultFilters(query.get("patient_id") or None, query.get("study_uid") or None, status,
                            _parse_date("since", query.get("since")), _parse_date("until", query.get("until")))
    if filters.since and filters.until and filters.since > filters.until:
        raise ApiError(400, "bad_parameter", f"since={filters.since} is after until={filters.until}")
    return filters


def parse_limit(query: dict[str, str], default: int | None) -> int | None:
    """``limit`` as 1..RESULTS_LIMIT_MAX (400 otherwise); ``default`` when absent."""
    text = query.get("limit")
    if not text:
        return default
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= RESULTS_LIMIT_MAX:
        raise ApiError(400, "bad_parameter", f"limit={text!r}; give a whole number from 1 to {RESULTS_LIMIT_MAX}")
    return limit


def _filtered(stmt: Select[tuple[Measurement]], f: ResultFilters) -> Select[tuple[Measurement]]:
    if f.patient_id:
        stmt = stmt.where(Measurement.patient_id == f.patient_id)
    if f.study_uid:
        stmt = stmt.where(Measurement.study_instance_uid == f.study_uid)
    if f.status:
        stmt = stmt.where(Measurement.status == f.status)
    else:
        stmt = stmt.where(Measurement.status.not_in(HIDDEN_UNLESS_ASKED))
    if f.since:
        stmt = stmt.where(Measurement.study_date >= f.since)
    if f.until:
        stmt = stmt.where(Measurement.study_date <= f.until)
    return stmt


def fetch_rows(app: ApiApp, query: dict[str, str], default_limit: int | None) -> list[dict[str, Any]]:
    """Stored rows (as ``row_dict``) matching the query's filters, in the order it asks for."""
    filters, limit = parse_filters(query), parse_limit(query, default_limit)
    order = query.get("order") or "study_date"
    if order not in ORDERS:
        raise ApiError(400, "bad_parameter", f"order={order!r}; choose one of: {', '.join(ORDERS)}")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        if order == "study_date":
            rows = query_measurements(session, patient_id=filters.patient_id, study_uid=filters.study_uid,
                                      status=filters.status, since=filters.since, until=filters.until, limit=limit,
                                      exclude_statuses=HIDDEN_UNLESS_ASKED)
        else:  # newest: the last measured first (for the page's "latest results")
            stmt = _filtered(select(Measurement), filters).order_by(Measurement.updated_at.desc(),
                                                                     Measurement.id.desc())
            rows = list(session.scalars(stmt.limit(limit) if limit else stmt))
        return [row_dict(r) for r in rows]


def handle_results(app: ApiApp, req: Request) -> Response:
    """Stored measurements as a JSON list (at most ``limit``, RESULTS_LIMIT_DEFAULT by default)."""
    return json_response(fetch_rows(app, req.query, RESULTS_LIMIT_DEFAULT))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # shown as text, never run as a formula
    return value


def handle_results_csv(app: ApiApp, req: Request) -> Response:
    """Stored measurements as a CSV download: every column of the table, same filters as JSON."""
    rows = fetch_rows(app, req.query, None)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(MEASUREMENT_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    return Response(200, out.getvalue().encode(), "text/csv; charset=utf-8",
                    {**API_HEADERS, "Content-Disposition": 'attachment; filename="fetalhc-results.csv"'})


def handle_job(app: ApiApp, req: Request) -> Response:
    """One job (a scan that arrived) and what became of it."""
    text = req.path.removeprefix("/api/jobs/")
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, "bad_parameter", f"job id {text[:40]!r} is not a number")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        job = get_job(session, int(text))
        if job is None:
            raise ApiError(404, "not_found", f"there is no job {text}")
        return json_response({c.name: getattr(job, c.name) for c in Job.__table__.columns})


def handle_stats(app: ApiApp, req: Request) -> Response:
    """Jobs and measurements counted by status, and the model this server measures with."""
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        jobs = job_counts(session)
        measurements = dict(session.execute(
            select(Measurement.status, func.count()).group_by(Measurement.status)).tuples().all())
    model = app.model
    return json_response({
        "jobs": {s.value: int(jobs.get(s.value, 0)) for s in JobStatus},
        "measurements": {s.value: int(measurements.get(s.value, 0)) for s in MeasurementStatus},
        "model": {"loaded": model is not None, "name": model.model_name if model else None,
                  "version": model.model_version if model else None},
    })
