"""The review answers: the worklist, one measurement with its decisions, a new decision, its image, growth curves.

The decision's values are ``worker.measure.review``'s (the same biometry and growth code as the pipeline);
the queries are ``db``'s. Errors are specific: 403 without a named token (``auth``), 404 for a measurement
that does not exist, 422 for a decision that cannot be recorded (a semi-axis <= 0, an HC of 900 mm...).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from db import (
    Job,
    Measurement,
    MeasurementStatus,
    latest_review,
    review_dict,
    review_worklist,
    reviews_of,
    row_dict,
    session_scope,
)
from models.growth import GA_MAX_DAYS, GA_MIN_DAYS, centile_curves
from worker.api.app import ApiApp
from worker.api.images import frame_of, render_png, scan_path
from worker.api.messages import ApiError
from worker.measure.review import Decision, ReviewRefused, apply_review

WORKLIST_LIMIT_DEFAULT = 100
WORKLIST_LIMIT_MAX = 1000
REVIEW_BODY_MAX = 64 * 1024
WORKLIST_STATUSES = (MeasurementStatus.NEEDS_REVIEW.value, MeasurementStatus.NOT_HEAD.value,
                     MeasurementStatus.MEASURED.value)
_REASON = re.compile(r"^[a-z0-9_]{1,64}$")
CURVE_CENTILES = (3, 10, 50, 90, 97)


class ReviewIn(BaseModel):
    """``POST /api/measurements/{id}/review``: the decision; for ``corrected`` the ellipse (mm, radians, in the
    row's frame: from the top-left of the measured region) or ``hc_mm`` alone; an optional note."""

    model_config = ConfigDict(extra="forbid")
    decision: str
    center_x_mm: float | None = None
    center_y_mm: float | None = None
    semi_axis_a_mm: float | None = None
    semi_axis_b_mm: float | None = None
    angle_rad: float | None = None
    hc_mm: float | None = None
    note: str | None = None


def measurement_id(text: str) -> int:
    """A measurement id from the path (400 when it is not a number)."""
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, "bad_parameter", f"measurement id {text[:40]!r} is not a number")
    return int(text)


def fetch_worklist(app: ApiApp, query: dict[str, str]) -> list[dict[str, Any]]:
    """Rows to review, oldest first: ``status`` (needs_review; not_head to audit the gate), ``reason`` (a reason or
    flag), ``include_reviewed=1`` (rows already decided too), ``limit``."""
    status = query.get("status") or MeasurementStatus.NEEDS_REVIEW.value
    if status not in WORKLIST_STATUSES:
        raise ApiError(400, "bad_parameter", f"status={status!r}; choose one of: {', '.join(WORKLIST_STATUSES)}")
    reason = query.get("reason") or None
    if reason is not None and not _REASON.match(reason):
        raise ApiError(400, "bad_parameter", f"reason={reason[:40]!r}; a reason or flag name such as low_confidence")
    text = query.get("limit") or str(WORKLIST_LIMIT_DEFAULT)
    if not text.isdigit() or not 1 <= int(text) <= WORKLIST_LIMIT_MAX:
        raise ApiError(400, "bad_parameter", f"limit={text[:20]!r}; a whole number from 1 to {WORKLIST_LIMIT_MAX}")
    include = (query.get("include_reviewed") or "0").lower() in ("1", "true", "yes")
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        rows = review_worklist(session, status, reason, include_reviewed=include, limit=int(text))
        return [row_dict(r) for r in rows]


def _row(session: Any, ident: int) -> Measurement:
    row = session.get(Measurement, ident)
    if row is None:
        raise ApiError(404, "not_found", f"there is no measurement {ident}")
    return row


def fetch_measurement(app: ApiApp, ident: int) -> dict[str, Any]:
    """One row with every decision about it (the audit trail), oldest first; 404 when there is none."""
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        row = _row(session, ident)
        return {"measurement": row_dict(row), "reviews": [review_dict(r) for r in reviews_of(session, row)]}


def parse_review(body: bytes) -> Decision:
    """The decision in a JSON body (400 when it is not JSON, 422 when it cannot be a decision)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not JSON: send {\"decision\": ...}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_review", "the body must be a JSON object with a decision")
    try:
        given = ReviewIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, "invalid_review", f"{where}: {first.get('msg', 'invalid')}") from None
    try:
        return Decision.parse(given.decision, given.model_dump(exclude={"decision", "note"}), given.note)
    except ReviewRefused as exc:
        raise ApiError(422, exc.reason, str(exc)) from None


def submit_review(app: ApiApp, ident: int, reviewer: str, decision: Decision) -> dict[str, Any]:
    """Record the decision by ``reviewer``; the row as it reads now and the new decision."""
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        row = _row(session, ident)
        try:
            review = apply_review(session, row, reviewer, decision, app.settings.growth_standard.value)
        except ReviewRefused as exc:
            raise ApiError(422, exc.reason, str(exc)) from None
        session.refresh(row)
        return {"measurement": row_dict(row), "review": review_dict(review)}


def measurement_image(app: ApiApp, ident: int, overlay: bool, width: int | None) -> bytes:
    """The measured frame as PNG (410 when its file is gone, 422 when it no longer reads)."""
    app.ensure_schema()
    with session_scope(app.settings.database_url) as session:
        row = _row(session, ident)
        job = session.get(Job, row.job_id) if row.job_id is not None else None
        review = latest_review(session, row)
        path = scan_path(row, job)
        session.expunge_all()
    scan = frame_of(row, path, app.settings.max_scan_mb)
    return render_png(row, scan, review, overlay=overlay, width=width)


def growth_curves(standard: str) -> dict[str, Any]:
    """The P3/P10/P50/P90/P97 HC curves (mm) of a standard, weekly from 14 to 40 weeks (``models.growth``)."""
    days = np.arange(GA_MIN_DAYS, GA_MAX_DAYS + 1, 7.0)
    try:
        curves = centile_curves(standard, days, CURVE_CENTILES)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    return {"standard": standard, "ga_days": days.tolist(),
            "centiles": {f"{c:g}": [round(float(v), 2) for v in values] for c, values in curves.items()}}
