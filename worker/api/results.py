"""The stored-data answers: results as JSON or CSV (with their filters), one job, counts by status and plane.

Rows that are in effect no head biometry plane (the gate's ``not_head`` that no reviewer corrected into a head,
and rows a reviewer rejected as ``rejected_not_head``) are left out of the results unless ``status=...`` or
``plane=...`` asks for them (``status`` is the row's own; rows by standard plane come in every status: an index
of the archive); the stats count them, by the row's own status and by the effective one. The queries are ``db``'s.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any

from db import (
    JobStatus,
    MeasurementStatus,
    get_job,
    job_counts,
    job_dict,
    measurement_counts,
    plane_counts,
    query_measurements,
    row_dict,
    session_scope,
)
from db.repository import MEASUREMENT_ORDERS, ROW_DICT_FIELDS
from db.reviews import EFFECTIVE_STATUSES, effective_status_counts
from models.plane.classes import PlaneClass
from worker.api.app import ApiApp
from worker.api.messages import ApiError

RESULTS_LIMIT_DEFAULT = 500  # JSON rows when no limit is given (the CSV has none)
RESULTS_LIMIT_MAX = 10_000
ORDERS = MEASUREMENT_ORDERS
# Spreadsheet programs run cells that start with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ResultFilters:
    """The filters of /api/results: exact patient and study, status, study-date range (inclusive), standard plane."""

    patient_id: str | None = None
    study_uid: str | None = None
    status: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    plane: str | None = None


def _parse_date(name: str, text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name}={text!r} is not a date; write YYYY-MM-DD") from None


def parse_filters(query: dict[str, str | None]) -> ResultFilters:
    """The result filters of a query string (400 on a malformed value)."""
    status = query.get("status") or None
    choices = [s.value for s in MeasurementStatus]
    if status is not None and status not in choices:
        raise ApiError(400, "bad_parameter", f"status={status!r}; choose one of: {', '.join(choices)}")
    plane = query.get("plane") or None
    planes = [p.value for p in PlaneClass]
    if plane is not None and plane not in planes:
        raise ApiError(400, "bad_parameter", f"plane={plane!r}; choose one of: {', '.join(planes)}")
    for name in ("patient_id", "study_uid"):  # a NUL or control character is no ID (PostgreSQL refuses a NUL)
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in query.get(name) or ""):
            raise ApiError(400, "bad_parameter", f"{name} holds a control character")
    filters = ResultFilters(query.get("patient_id") or None, query.get("study_uid") or None, status,
                            _parse_date("since", query.get("since")), _parse_date("until", query.get("until")), plane)
    if filters.since and filters.until and filters.since > filters.until:
        raise ApiError(400, "bad_parameter", f"since={filters.since} is after until={filters.until}")
    return filters


def parse_limit(query: dict[str, str | None], default: int | None) -> int | None:
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


def fetch_rows(app: ApiApp, query: dict[str, str | None], default_limit: int | None) -> list[dict[str, Any]]:
    """Stored rows (as ``row_dict``) matching the query's filters, in the order it asks for."""
    filters, limit = parse_filters(query), parse_limit(query, default_limit)
    order = query.get("order") or "study_date"
    if order not in ORDERS:
        raise ApiError(400, "bad_parameter", f"order={order!r}; choose one of: {', '.join(ORDERS)}")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        rows = query_measurements(session, patient_id=filters.patient_id, study_uid=filters.study_uid,
                                  status=filters.status, since=filters.since, until=filters.until, limit=limit,
                                  hide_not_head=True, order=order, plane=filters.plane)
        return [row_dict(r) for r in rows]


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict):  # plane_probabilities: one JSON object in its cell
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # shown as text, never run as a formula
    return value


def results_csv(rows: list[dict[str, Any]]) -> bytes:
    """Rows as a CSV document: every column of the table and the effective values after reviews, cells that
    would be formulas made text."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ROW_DICT_FIELDS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue().encode()


def fetch_job(app: ApiApp, text: str) -> dict[str, Any]:
    """One job (a scan that arrived) and what became of it; 400 for a malformed id, 404 when there is none."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # "²" is a digit to str.isdigit, not to int()
        raise ApiError(400, "bad_parameter", f"job id {text[:40]!r} is not a number")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        job = get_job(session, int(text))
        if job is None:
            raise ApiError(404, "not_found", f"there is no job {text}")
        return job_dict(job)


def fetch_stats(app: ApiApp) -> dict[str, Any]:
    """Jobs and measurements counted by status (measurements also by effective status), measurements by plane, and the model this server measures with."""
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        jobs = job_counts(session)
        measurements = measurement_counts(session)
        effective = effective_status_counts(session)
        planes = plane_counts(session)
    model = app.model
    return {
        "jobs": {s.value: int(jobs.get(s.value, 0)) for s in JobStatus},
        "measurements": {s.value: int(measurements.get(s.value, 0)) for s in MeasurementStatus},
        # after people's reviews: a corrected not_head counts as reviewed, a measured row rejected as rejected
        "effective": {s: int(effective.get(s, 0)) for s in EFFECTIVE_STATUSES},
        "planes": {p.value: int(planes.get(p.value, 0)) for p in PlaneClass},
        "model": {"loaded": model is not None, "name": model.model_name if model else None,
                  "version": model.model_version if model else None},
    }
