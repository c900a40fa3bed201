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
        upsert_measurement(s, _row("1.2.4", 150.0))  # another instance: its own row
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count()).select_from(Measurement)) == 3
        row = s.scalars(select(Measurement).where(Measurement.model_version == "v1",
                                                  Measurement.sop_instance_uid == "1.2.3")).one()
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


def _frames(db_url: str) -> dict[tuple[str, str], list[tuple[int, str, float | None]]]:
    """(instance, model) -> [(frame, status, hc_mm)] of every stored row."""
    out: dict[tuple[str, str], list[tuple[int, str, float | None]]] = {}
    with session_scope(db_url) as s:
        for m in s.scalars(select(Measurement).order_by(Measurement.frame)):
            out.setdefault((m.sop_instance_uid, m.model_version), []).append((m.frame, m.status, m.hc_mm))
    return out


def test_another_frame_of_a_cine_replaces_the_result_of_the_instance_and_model(db_url: str) -> None:
    with session_scope(db_url) as s:
        upsert_measurement(s, _row("5.5", 170.0, frame=3))  # sampled to 16 frames: frame 3 was the best
        upsert_measurement(s, _row("5.5", 165.0, version="v2", frame=3))
        upsert_measurement(s, _row("5.6", 150.0, frame=3))
    with session_scope(db_url) as s:  # measured again with FETALHC_MAX_FRAMES=0: frame 41 is better
        upsert_measurement(s, _row("5.5", 172.0, frame=41, status="needs_review"))
    assert _frames(db_url) == {("5.5", "v1"): [(41, "needs_review", 172.0)], ("5.5", "v2"): [(3, "measured", 165.0)],
                               ("5.6", "v1"): [(3, "measured", 150.0)]}
    with session_scope(db_url) as s:  # set aside on another frame by the head-plane gate: replaces too
        upsert_measurement(s, _row("5.6", None, frame=1, status="not_head"))
    assert _frames(db_url)[("5.6", "v1")] == [(1, "not_head", None)]


def test_a_failure_on_another_frame_never_replaces_a_measurement(db_url: str) -> None:
    with session_scope(db_url) as s:
        upsert_measurement(s, _row("6.6", 180.0, frame=7))
        upsert_measurement(s, _row("6.6", None, frame=1, status="failed", reason="truncated"))
        upsert_measurement(s, _row("6.7", None, frame=2, status="failed", reason="no_head_found"))
        upsert_measurement(s, _row("6.7", None, frame=1, status="failed", reason="blank_image"))
    assert _frames(db_url) == {("6.6", "v1"): [(7, "measured", 180.0)], ("6.7", "v1"): [(1, "failed", None)]}
    with session_scope(db_url) as s:  # a measurement of another frame replaces the failure
        upsert_measurement(s, _row("6.7", 140.0, frame=9))
    assert _frames(db_url)[("6.7", "v1")] == [(9, "measured", 140.0)]


def test_two_transactions_measuring_other_frames_leave_one_row(pg_url: str) -> None:
    """PostgreSQL: the second writer waits on the first's advisory lock, then replaces its committed row."""
    import threading
    import time

    from sqlalchemy import text

    from db import get_engine

    upgrade(pg_url)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with session_scope(pg_url) as s:
                upsert_measurement(s, _row("7.1", 175.0, frame=12))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with session_scope(pg_url) as first:
        upsert_measurement(first, _row("7.1", 170.0, frame=2))
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        with get_engine(pg_url).connect() as conn:  # wait until the second writer is blocked on the lock
            while not conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                        "AND NOT granted")).scalar():
                assert time.monotonic() < deadline and thread.is_alive(), "the second writer never waited"
                time.sleep(0.05)
                conn.rollback()
    thread.join(30)
    assert not errors and not thread.is_alive()
    assert _frames(pg_url) == {("7.1", "v1"): [(12, "measured", 175.0)]}


def test_pending_reports_and_their_outcome(db_url: str) -> None:
    from db import SrStatus, pending_reports, set_sr_status

    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with session_scope(db_url) as s:
        for uid, status, sr in [("8.1", "measured", "pending"), ("8.2", "needs_review", "pending"),
                                ("8.3", "measured", "done"), ("8.4", "measured", None),
                                ("8.5", "not_head", "pending"), ("8.6", "measured", "pending")]:
            upsert_measurement(s, _row(uid, 150.0, status=status, sr_status=sr))
        s.flush()
        for m in s.scalars(select(Measurement).where(Measurement.sop_instance_uid != "8.6")):
            m.updated_at = past  # 8.6 was just stored: its worker may be exporting it now
    with session_scope(db_url) as s:
        assert [m.sop_instance_uid for m in pending_reports(s, dt.timedelta(minutes=10), 10)] == ["8.1", "8.2"]
        assert len(pending_reports(s, dt.timedelta(minutes=10), 1)) == 1
        assert set_sr_status(s, [("8.1", 1, "v1"), ("8.3", 1, "v1")], SrStatus.DONE) == 1  # 8.3 was not pending
        assert set_sr_status(s, [("8.2", 1, "v1")], SrStatus.PENDING) == 1  # tried again later
    with session_scope(db_url) as s:
        assert pending_reports(s, dt.timedelta(minutes=10), 10) == []
        assert [m.sop_instance_uid for m in pending_reports(s, dt.timedelta(0), 10)] == ["8.6", "8.2"]
        assert {m.sop_instance_uid: m.sr_status for m in s.scalars(select(Measurement))}["8.1"] == "done"
