"""The Celery tasks called directly: idempotence, poison cap, batches, transient errors, clean logs."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db import Job, JobStatus, Measurement, create_job, session_scope, set_job_status, upgrade
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.services import PrivateRedis, free_port, private_redis  # noqa: F401 - fixture
from tests.worker.ingest_support import job_row
from worker.core.logs import JsonFormatter
from worker.core.settings import Settings, get_settings

PATIENT_ID = "PHI-9917-3302"
PATIENT_NAME = "Bovary^Emma"


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One torch thread while measuring (the test machine's cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def env(fetalhc_env: pytest.MonkeyPatch, one_thread: None) -> Settings:
    """Settings on a temporary SQLite database, tables created."""
    settings = get_settings()
    upgrade(settings.database_url)
    return settings


@pytest.fixture()
def broker(env: Settings, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> PrivateRedis:
    """A private Redis as the broker of this process's settings and Celery app."""
    import worker.queue.celery_app

    monkeypatch.setenv("FETALHC_BROKER_URL", private_redis.url)
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    return private_redis


def _scan(path: Path, seed: int = 0, **kwargs: object) -> Path:
    phantom = make_phantom(shape=(200, 300), hc_mm=100.0 + seed, spacing_mm=0.2, seed=seed)
    ident = ScanIdentity(patient_id=PATIENT_ID, patient_name=PATIENT_NAME, study_date=dt.date(2026, 2, 1))
    return write_us_image(path, phantom.image, 0.2, identity=ident, **kwargs)  # type: ignore[arg-type]


def _job(settings: Settings, path: Path, status: JobStatus = JobStatus.QUEUED, attempts: int = 0) -> int:
    with session_scope(settings.database_url) as s:
        job_id = create_job(s, str(path.resolve()), "test", "live")
        set_job_status(s, job_id, status)
        s.execute(update(Job).where(Job.id == job_id).values(attempts=attempts))
    return job_id


def _rows(settings: Settings) -> list[Measurement]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Measurement)))


def test_measure_records_a_scan_and_skips_it_when_delivered_again(env: Settings, tmp_path: Path) -> None:
    from worker.queue.tasks import measure

    job_id = _job(env, _scan(tmp_path / "a.dcm"))
    first = measure.run(job_id, str(tmp_path / "a.dcm"), None)
    again = measure.run(job_id, str(tmp_path / "a.dcm"), None)  # a redelivered or duplicated message

    assert first["status"] in ("measured", "needs_review") and first["hc_mm"] == pytest.approx(100, rel=0.08)
    assert again == {"job_id": job_id, "status": job_row(env, job_id).status, "duplicate": True}
    assert job_row(env, job_id).attempts == 1
    assert len(_rows(env)) == 1


def test_a_scan_that_never_finishes_is_failed_as_poison_at_the_cap(env: Settings, tmp_path: Path) -> None:
    from worker.queue.tasks import measure

    path = _scan(tmp_path / "a.dcm")
    job_id = _job(env, path, JobStatus.RUNNING, attempts=env.max_attempts)  # started MAX_ATTEMPTS times, died

    result = measure.run(job_id, str(path), None)

    assert result == {"job_id": job_id, "status": "failed", "reason": "poison"}
    job = job_row(env, job_id)
    assert (job.status, job.reason) == ("failed", "poison") and "attempts" in (job.detail or "")
    assert _rows(env) == []  # not measured
    below = _job(env, path, JobStatus.RUNNING, attempts=env.max_attempts - 1)
    assert measure.run(below, str(path), None)["status"] in ("measured", "needs_review")  # one more try is left


def test_measure_batch_measures_every_item_and_fails_only_the_bad_one(env: Settings, tmp_path: Path) -> None:
    from worker.queue.tasks import measure_batch

    good = [_scan(tmp_path / f"g{i}.dcm", seed=i) for i in range(2)]
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom" * 30)
    jobs = [_job(env, p) for p in (*good, junk)]

    result = measure_batch.run([[j, str(p), None] for j, p in zip(jobs, (*good, junk))])

    assert [r["job_id"] for r in result["results"]] == jobs
    assert [r["status"] for r in result["results"]][2] == "failed"
    assert [job_row(env, j).status for j in jobs][:2] == ["done", "done"]
    assert (job_row(env, jobs[2]).status, job_row(env, jobs[2]).reason) == ("failed", "not_dicom")
    assert len(_rows(env)) == 2
    again = measure_batch.run([[j, str(p), None] for j, p in zip(jobs, (*good, junk))])
    assert all(r.get("duplicate") for r in again["results"])  # redelivered after it finished: nothing redone


def test_a_batch_interrupted_before_is_split_into_single_messages(
        env: Settings, tmp_path: Path, broker: PrivateRedis) -> None:
    import redis

    from worker.queue.tasks import measure_batch

    paths = [_scan(tmp_path / f"s{i}.dcm", seed=i) for i in range(3)]
    crashed = _job(env, paths[0], JobStatus.RUNNING, attempts=1)  # a worker died while the batch ran
    finished = _job(env, paths[1], JobStatus.DONE, attempts=1)
    waiting = _job(env, paths[2], JobStatus.QUEUED)

    result = measure_batch.run([[j, str(p), None] for j, p in zip((crashed, finished, waiting), paths)])

    assert result == {"split": 3}
    raw = redis.Redis.from_url(broker.url).lrange("live", 0, -1)
    messages = [json.loads(m) for m in raw]
    assert {m["headers"]["task"] for m in messages} == {"fetalhc.measure"}
    assert sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in messages) == sorted(
        (crashed, finished, waiting))
    assert _rows(env) == []  # nothing measured by the batch itself


def test_an_unreachable_database_is_a_transient_error_without_details(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, one_thread: None) -> None:
    from worker.queue.tasks import TransientError, measure

    fetalhc_env.setenv("FETALHC_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    get_settings.cache_clear()
    path = _scan(tmp_path / "a.dcm")

    with pytest.raises(TransientError) as caught:
        measure.run(7, str(path), None)

    assert str(caught.value) == "database: OperationalError"  # what a retry logs: no SQL, no values
    assert caught.value.transient


def test_worker_logs_name_jobs_and_never_patients(env: Settings, tmp_path: Path) -> None:
    from worker.queue.tasks import measure, measure_batch

    good = _scan(tmp_path / "good.dcm")
    uncalibrated = _scan(tmp_path / "uncal.dcm", seed=3, regions=False)
    truncated = tmp_path / "trunc.dcm"
    data = _scan(tmp_path / "other.dcm", seed=5).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    jobs = {p: _job(env, p) for p in (good, uncalibrated, truncated)}
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        measure.run(jobs[good], str(good), None)
        measure_batch.run([[jobs[p], str(p), None] for p in (uncalibrated, truncated)])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    text = buffer.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("job_id") == jobs[good] for line in lines)
    assert any(line.get("job_ids") == [jobs[uncalibrated], jobs[truncated]] for line in lines)
    for value in (PATIENT_ID, PATIENT_NAME, "Bovary", "Emma"):
        assert value.lower() not in text.lower()
    assert {job_row(env, j).reason for j in jobs.values()} == {None, "uncalibrated", "truncated"}


def test_enqueue_with_batch_groups_scans_per_message(
        env: Settings, tmp_path: Path, broker: PrivateRedis) -> None:
    import redis

    from worker.queue.enqueue import enqueue_files

    paths = [_scan(tmp_path / f"s{i}.dcm", seed=i) for i in range(5)]

    summary = enqueue_files(get_settings(), paths, batch=2)

    assert (summary.queued, summary.deferred) == (5, 0)
    raw = redis.Redis.from_url(broker.url).lrange("live", 0, -1)
    bodies = [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in reversed(raw)]  # oldest first
    assert [[item[0] for item in body[0]] for body in bodies] == [summary.job_ids[:2], summary.job_ids[2:4],
                                                                    summary.job_ids[4:]]
    assert {job_row(env, j).status for j in summary.job_ids or []} == {"queued"}
    with pytest.raises(ValueError):
        enqueue_files(get_settings(), paths, batch=0)


def test_enqueue_publishes_to_the_broker_of_the_settings_it_is_given(
        env: Settings, tmp_path: Path, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's own broker (environment) is down; the Settings passed in name a live one."""

    import redis

    import worker.queue.celery_app
    from worker.queue.enqueue import enqueue_files

    monkeypatch.setenv("FETALHC_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    settings = get_settings().replace(broker_url=private_redis.url)

    summary = enqueue_files(settings, [_scan(tmp_path / "a.dcm"), _scan(tmp_path / "b.dcm", seed=1)])

    assert (summary.queued, summary.deferred) == (2, 0)
    raw = redis.Redis.from_url(private_redis.url).lrange("live", 0, -1)
    sent = sorted(json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in raw)
    assert sent == sorted(summary.job_ids)
