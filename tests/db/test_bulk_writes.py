"""A batch's writes in few statements (upsert_measurements, finish_jobs): the same table contents as one
upsert_measurement / set_job_status per row, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from db import Job, JobStatus, Measurement, create_job, session_scope, set_job_status, upgrade, upsert_measurement
from db.repository import finish_jobs, upsert_measurements

SKIP = {"id", "created_at", "updated_at", "finished_at"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    return url


def _row(uid: str, hc: float | None, frame: int = 1, status: str = "measured", **extra: object) -> dict[str, object]:
    return {"sop_instance_uid": uid, "frame": frame, "model_version": "v1", "status": status, "hc_mm": hc,
            "patient_id": "P1", "study_date": dt.date(2026, 1, 5), **extra}


def _table(url: str) -> list[tuple]:
    with session_scope(url) as s:
        rows = s.scalars(select(Measurement).order_by(Measurement.sop_instance_uid, Measurement.frame)).all()
        return [tuple((c, getattr(r, c)) for c in sorted(Measurement.__table__.columns.keys()) if c not in SKIP)
                for r in rows]


def _clear(url: str) -> None:
    with session_scope(url) as s:
        s.query(Measurement).delete()


# Before: what is stored already. Batch: one transaction's rows, as store_rows writes them.
BEFORE = [_row("1.1", 170.0), _row("1.2", 150.0, frame=3), _row("1.3", 140.0, frame=2),
          _row("1.4", None, frame=5, status="failed", reason="no_head_found"), _row("1.6", 120.0)]
BATCH = [
    _row("1.1", 171.5, detail="again"),  # the same key, newer values
    _row("1.2", 155.0, frame=1),  # another frame of an instance replaces it
    _row("1.3", None, frame=4, status="failed", reason="truncated"),  # a failure never replaces a measurement
    _row("1.4", 200.0, frame=1, status="needs_review", flags="unstable"),  # a measurement replaces a failure
    _row("1.5", None, status="failed", reason="no_head_found"),  # new, and a failure with its own columns
    _row("1.6", None, status="failed", reason="truncated"),  # a failure on the same frame keeps the measurement
]


def test_upsert_measurements_writes_as_one_upsert_per_row(db_url: str) -> None:
    expected = []
    for bulk in (False, True):
        _clear(db_url)
        with session_scope(db_url) as s:
            for row in BEFORE:
                upsert_measurement(s, row)
        with session_scope(db_url) as s:
            if bulk:
                upsert_measurements(s, BATCH)
            else:
                for row in BATCH:
                    upsert_measurement(s, row)
        expected.append(_table(db_url))
    assert expected[0] == expected[1]
    by_uid = {dict(r)["sop_instance_uid"]: dict(r) for r in expected[1]}
    assert by_uid["1.1"]["hc_mm"] == 171.5 and by_uid["1.2"]["frame"] == 1 and by_uid["1.3"]["frame"] == 2
    assert by_uid["1.4"]["status"] == "needs_review" and by_uid["1.6"]["hc_mm"] == 120.0
    assert by_uid["1.5"]["status"] == "failed" and len(expected[1]) == 6


def test_two_rows_of_one_instance_in_a_batch_are_written_in_order(db_url: str) -> None:
    with session_scope(db_url) as s:
        upsert_measurements(s, [_row("2.1", 100.0, frame=1), _row("2.1", 110.0, frame=2)])
    assert [(dict(r)["frame"], dict(r)["hc_mm"]) for r in _table(db_url)] == [(2, 110.0)]
    with session_scope(db_url) as s, pytest.raises(ValueError, match="unknown measurement columns"):
        upsert_measurements(s, [_row("2.2", 1.0, colour="red")])


def test_finish_jobs_sets_what_set_job_status_sets(db_url: str) -> None:
    outcomes = [(JobStatus.DONE, None, "note", "1.1"), (JobStatus.NEEDS_REVIEW, "plane_uncertain", "why", "1.2"),
                (JobStatus.FAILED, "truncated", "cut", None), (JobStatus.NOT_HEAD, "not_head_plane", "score", "1.4"),
                (JobStatus.FAILED, None, None, "1.5")]
    with session_scope(db_url) as s:
        one = [create_job(s, f"/a/{i}", "cli") for i in range(len(outcomes))]
        many = [create_job(s, f"/b/{i}", "cli") for i in range(len(outcomes))]
        for job_id in one + many:
            set_job_status(s, job_id, JobStatus.RUNNING)
    with session_scope(db_url) as s:
        for job_id, (status, reason, detail, uid) in zip(one, outcomes):
            set_job_status(s, job_id, status, reason=reason, detail=detail, sop_instance_uid=uid)
        finish_jobs(s, [(job_id, *o) for job_id, o in zip(many, outcomes)])
    with session_scope(db_url) as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        for a, b in zip(one, many):
            left, right = jobs[a], jobs[b]
            assert (left.status, left.reason, left.detail, left.sop_instance_uid, left.attempts) == (
                right.status, right.reason, right.detail, right.sop_instance_uid, right.attempts)
            assert right.finished_at is not None
        with pytest.raises(ValueError, match="finished statuses"):
            finish_jobs(s, [(one[0], JobStatus.QUEUED, None, None, None)])
