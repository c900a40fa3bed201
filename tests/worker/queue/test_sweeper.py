"""The sweeper on a real (private) Redis: lost jobs sent again, waiting ones left alone, one sweeper at a time."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import update

from db import Job, JobStatus, create_job, session_scope, set_job_status, upgrade
from tests.services import PrivateRedis, private_redis  # noqa: F401 - fixture
from worker.core.settings import Settings, get_settings


@pytest.fixture()
def settings(fetalhc_env: pytest.MonkeyPatch, private_redis: PrivateRedis) -> Settings:
    import worker.queue.celery_app

    fetalhc_env.setenv("FETALHC_BROKER_URL", private_redis.url)
    fetalhc_env.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    upgrade(get_settings().database_url)
    return get_settings()


def _job(settings: Settings, status: JobStatus, age_s: float, queue: str = "live") -> int:
    with session_scope(settings.database_url) as s:
        job_id = create_job(s, f"/scans/{status.value}-{age_s}.dcm", "test", queue)
        set_job_status(s, job_id, status)
        s.execute(update(Job).where(Job.id == job_id).values(
            updated_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=age_s)))
    return job_id


def _queued_job_ids(url: str, queue: str = "live") -> list[int]:
    import redis

    raw = redis.Redis.from_url(url).lrange(queue, 0, -1)
    return sorted(json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in raw)


def _status(settings: Settings, job_id: int) -> str:
    with session_scope(settings.database_url) as s:
        return s.get(Job, job_id).status  # type: ignore[union-attr]


def test_stale_jobs_are_sent_again_while_their_queue_is_empty(settings: Settings, private_redis: PrivateRedis) -> None:
    from worker.queue.sweep import sweep

    received = _job(settings, JobStatus.RECEIVED, 600)  # broker was down when it arrived
    queued = _job(settings, JobStatus.QUEUED, 600)  # its message was lost with Redis
    running = _job(settings, JobStatus.RUNNING, 600)  # its worker was killed
    fresh = _job(settings, JobStatus.QUEUED, 5)
    done = _job(settings, JobStatus.DONE, 600)

    summary = sweep(settings, dt.timedelta(seconds=60))

    assert sorted(summary.requeued) == [received, queued, running] and summary.waiting == 0
    assert _queued_job_ids(private_redis.url) == [received, queued, running]
    assert [_status(settings, j) for j in (received, queued, running, fresh, done)] == [
        "queued", "queued", "queued", "queued", "done"]
    assert sweep(settings, dt.timedelta(seconds=60)).requeued == []  # just updated: not stale again yet


def test_a_job_waiting_behind_a_busy_queue_is_not_sent_again(settings: Settings, private_redis: PrivateRedis) -> None:
    import redis

    from worker.queue.enqueue import send
    from worker.queue.sweep import queue_depths, sweep

    waiting = _job(settings, JobStatus.QUEUED, 600, queue="backfill")
    received = _job(settings, JobStatus.RECEIVED, 600, queue="backfill")
    other = _job(settings, JobStatus.QUEUED, 600, queue="live")
    send(waiting, "/scans/w.dcm", "backfill")  # its message is in the (long) backfill queue
    client = redis.Redis.from_url(private_redis.url)

    assert queue_depths(client) == {"live": 0, "backfill": 1}
    summaries = [sweep(settings, dt.timedelta(seconds=60)) for _ in range(3)]  # sweep after sweep

    assert sorted(summaries[0].requeued) == sorted([received, other]) and summaries[0].waiting == 1
    assert [(s.requeued, s.waiting) for s in summaries[1:]] == [([], 1), ([], 1)]  # never duplicated
    assert _queued_job_ids(private_redis.url, "backfill") == sorted([waiting, received])
    assert _queued_job_ids(private_redis.url, "live") == [other]  # 'live' was empty: its lost job went again
    client.delete("backfill")  # the queue drained without the message (lost): now it is sent again
    with session_scope(settings.database_url) as s:
        s.execute(update(Job).values(updated_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)))
    assert waiting in sweep(settings, dt.timedelta(seconds=60)).requeued
    assert sweep(settings, dt.timedelta(seconds=0), force=True).waiting == 0


def test_one_sweeper_per_interval_across_workers(settings: Settings) -> None:
    from worker.ops.housekeeping import PeriodicSweeper

    _job(settings, JobStatus.RECEIVED, 10_000)
    first, second = PeriodicSweeper(settings), PeriodicSweeper(settings)

    assert first.run_once() is not None
    assert second.run_once() is None  # the lock is held for this interval


def test_requeue_command_reports_what_it_did(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    received = _job(settings, JobStatus.RECEIVED, 3600)

    assert main(["requeue", "--stale", "--older-than", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"requeued": 1, "job_ids": [received], "waiting": 0, "deferred": 0, "sr_exported": 0}


def test_a_broker_that_is_down_leaves_jobs_for_the_next_sweep(settings: Settings,
                                                              private_redis: PrivateRedis) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from worker.queue.sweep import sweep

    job = _job(settings, JobStatus.RECEIVED, 600)
    private_redis.stop()
    with pytest.raises(RedisConnectionError):
        sweep(settings, dt.timedelta(seconds=60))
    private_redis.start()
    assert _status(settings, job) == "received"
    assert sweep(settings, dt.timedelta(seconds=60)).requeued == [job]


_LOST_BEFORE_EXPORT = """
import os, sys
import worker.measure.sr_export
worker.measure.sr_export.export_and_record = lambda *a, **k: os._exit(137)  # killed after the commit, before the SR
from worker.cli import main
main(["process", sys.argv[1]])
"""


def test_an_sr_lost_between_the_commit_and_the_export_is_regenerated_by_the_sweep(
        settings: Settings, fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``fetalhc process`` dies right after committing its row; the next sweep writes the SR it owed."""
    import os
    import subprocess
    import sys

    import pydicom
    from sqlalchemy import select

    from db import Measurement
    from dicom_io.phantom import make_phantom
    from dicom_io.writer import write_us_image
    from worker.queue.sweep import sweep

    repo = Path(__file__).resolve().parents[3]
    reports = tmp_path / "reports"
    fetalhc_env.setenv("FETALHC_SR_DIR", str(reports))
    get_settings.cache_clear()
    settings = get_settings()
    phantom = make_phantom(hc_mm=190.0, spacing_mm=0.15, angle=0.5, seed=3)
    scan = write_us_image(tmp_path / "scan.dcm", phantom.image, phantom.spacing_mm)

    proc = subprocess.run([sys.executable, "-c", _LOST_BEFORE_EXPORT, str(scan)], cwd=repo, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(repo)}, text=True, timeout=300)

    assert proc.returncode == 137, proc.stderr[-2000:]
    with session_scope(settings.database_url) as s:
        row = s.scalars(select(Measurement)).one()
        assert row.status in ("measured", "needs_review") and row.sr_status == "pending"
        uid = row.sop_instance_uid
    assert not list(reports.glob("*.dcm"))  # the SR was lost with the process
    assert sweep(settings, dt.timedelta(seconds=60)).sr_exported == 0  # young: its worker may be exporting it
    with session_scope(settings.database_url) as s:
        s.execute(update(Measurement).values(updated_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=600)))

    assert sweep(settings, dt.timedelta(seconds=60)).sr_exported == 1
    assert sweep(settings, dt.timedelta(0)).sr_exported == 0  # done: never again

    (sr_file,) = reports.glob("*.dcm")
    assert pydicom.dcmread(sr_file).CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == uid
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(Measurement)).one().sr_status == "done"


def test_an_sr_error_never_breaks_the_sweep(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                            private_redis: PrivateRedis) -> None:
    import worker.measure.sr_export
    from worker.queue.sweep import sweep

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the SR code")

    monkeypatch.setattr(worker.measure.sr_export, "export_pending", broken)
    with_sr = settings.replace(sr_dir=Path("/nonexistent/reports"))
    received = _job(settings, JobStatus.RECEIVED, 600)

    summary = sweep(with_sr, dt.timedelta(seconds=60))

    assert (summary.requeued, summary.sr_exported) == ([received], 0)
    assert _queued_job_ids(private_redis.url) == [received]
