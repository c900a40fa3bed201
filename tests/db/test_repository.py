"""Idempotent measurement upserts and job bookkeeping, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from db import (
    Job,
    JobStatus,
    Measurement,
    create_job,
    get_job,
    job_counts,
    measured_uids,
    query_measurements,
    session_scope,
    set_job_status,
    stale_jobs,
    upgrade,
    upsert_measurement,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    return url


def _row(uid: str, hc: float, version: str = "v1", status: str = "measured", **extra: object) -> dict[str, object]:
    return {"sop_instance_uid": uid, "frame": 1, "model_version": version, "status": status, "hc_mm": hc,
            "patient_id": "P1", "study_date": dt.date(2026, 1, 5), **extra}


def test_upsert_is_idempotent_per_instance_frame_and_model(db_url: str) -> None:
    with session_scope(db_url) as s:
        upsert_measurement(s, _row("1.2.3", 170.0))
        upsert_measurement(s, _row("1.2.3", 171.5))  # redelivered: same key, newer value
        upsert_measurement(s, _row("1.2.3", 160.0, version="v2"))  # another model: its own row
        upsert_measurement(s, _row("1.2.3", 150.0, frame=2))  # another frame: its own row
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count()).select_from(Measurement)) == 3
        row = s.scalars(select(Measurement).where(Measurement.model_version == "v1",
                                                  Measurement.frame == 1)).one()
        assert row.hc_mm == 171.5
        assert row.created_at is not None and row.updated_at >= row.created_at.replace(
            tzinfo=row.updated_at.tzinfo)


def test_upsert_rejects_missing_key_and_unknown_columns(db_url: str) -> None:
    with session_scope(db_url) as s:
        with pytest.raises(ValueError, match="model_version"):
            upsert_measurement(s, {"sop_instance_uid": "1.2", "frame": 1, "status": "measured"})
        with pytest.raises(ValueError, match="unknown measurement columns"):
            upsert_measurement(s, _row("1.2", 1.0, colour="red"))


def test_job_lifecycle_counts_attempts_and_timestamps(db_url: str) -> None:
    with session_scope(db_url) as s:
        job_id = create_job(s, "/spool/a.dcm", "live", queue="live", ga_days_given=150.0)
    with session_scope(db_url) as s:
        set_job_status(s, job_id, JobStatus.QUEUED)
        set_job_status(s, job_id, JobStatus.RUNNING)
        set_job_status(s, job_id, JobStatus.RUNNING)  # redelivered after a lost worker
        set_job_status(s, job_id, JobStatus.FAILED, reason="uncalibrated", detail="no region", sop_instance_uid="9.9")
    with session_scope(db_url) as s:
        job = get_job(s, job_id)
        assert job is not None
        assert (job.status, job.reason, job.attempts, job.sop_instance_uid) == ("failed", "uncalibrated", 2, "9.9")
        assert job.queued_at and job.started_at and job.finished_at
        assert job_counts(s) == {"failed": 1}


def test_a_needs_review_result_replaces_an_earlier_failure_on_the_job(db_url: str) -> None:
    with session_scope(db_url) as s:
        job_id = create_job(s, "/spool/b.dcm", "live", queue="live")
        set_job_status(s, job_id, JobStatus.FAILED, reason="database_error", detail="attempt 1")
    with session_scope(db_url) as s:  # run again (requeued), measured, but doubtful
        set_job_status(s, job_id, JobStatus.NEEDS_REVIEW, detail="cine sampled to 16 of its 120 frames")
    with session_scope(db_url) as s:
        job = get_job(s, job_id)
        assert job is not None
        assert (job.status, job.reason, job.detail) == ("needs_review", None, "cine sampled to 16 of its 120 frames")


def test_stale_jobs_and_measured_uids(db_url: str) -> None:
    with session_scope(db_url) as s:
        old = create_job(s, "/a", "cli")
        fresh = create_job(s, "/b", "cli")
        done = create_job(s, "/c", "cli")
        set_job_status(s, done, JobStatus.DONE)
        s.flush()
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
        s.get(Job, old).updated_at = past
        s.get(Job, done).updated_at = past
        upsert_measurement(s, _row("1.1", 100.0))
        upsert_measurement(s, _row("1.2", 0.0, status="failed"))
    with session_scope(db_url) as s:
        assert [j.id for j in stale_jobs(s, dt.timedelta(minutes=30))] == [old]
        assert fresh not in [j.id for j in stale_jobs(s, dt.timedelta(minutes=30))]
        # A failed row does not count as measured: backfill tries it again.
        assert measured_uids(s, "v1", ["1.1", "1.2", "1.3"]) == {"1.1"}
        assert measured_uids(s, "v2", ["1.1"]) == set()


def test_query_filters_by_patient_and_date(db_url: str) -> None:
    with session_scope(db_url) as s:
        upsert_measurement(s, _row("1", 100.0, patient_id="A", study_date=dt.date(2026, 1, 1)))
        upsert_measurement(s, _row("2", 200.0, patient_id="A", study_date=dt.date(2026, 3, 1)))
        upsert_measurement(s, _row("3", 300.0, patient_id="B", study_date=dt.date(2026, 2, 1)))
    with session_scope(db_url) as s:
        assert [r.hc_mm for r in query_measurements(s, patient_id="A")] == [100.0, 200.0]
        assert [r.hc_mm for r in query_measurements(s, since=dt.date(2026, 1, 15))] == [300.0, 200.0]


def test_a_failure_never_replaces_a_measurement(db_url: str) -> None:
    with session_scope(db_url) as s:
        upsert_measurement(s, _row("7.7", 180.0))
        upsert_measurement(s, _row("7.7", None, status="failed", reason="truncated"))  # a broken re-send
        upsert_measurement(s, _row("8.8", None, status="failed", reason="no_head_found"))
        upsert_measurement(s, _row("8.8", 150.0, status="needs_review"))  # measured later: replaces the failure
    with session_scope(db_url) as s:
        rows = {r.sop_instance_uid: r for r in query_measurements(s)}
        assert (rows["7.7"].status, rows["7.7"].hc_mm, rows["7.7"].reason) == ("measured", 180.0, None)
        assert (rows["8.8"].status, rows["8.8"].hc_mm) == ("needs_review", 150.0)
