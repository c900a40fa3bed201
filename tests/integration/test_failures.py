"""The queue under failure, with real worker processes, real Redis and real PostgreSQL.

1. ``kill -9`` of a worker in the middle of 50 scans: after a new worker starts, one row per scan.
2. Redis stopped and restarted while scans are being enqueued: no scan lost.
3. PostgreSQL restarted while a worker runs: tasks retry and all finish.
4. Corrupt files among good ones: failed with their reasons, the rest done, the worker alive.
5. The same scan sent twice (two jobs, and a duplicated message): one result row.

Workers run with one torch thread, JSON logs and a sweeper every second that calls a job stale
after 8 s (production: 60 s and 2 x TASK_TIME_LIMIT + 120 s). Redis is private to each test (the
shared one serves other people's tests, and one test stops it); test 3 also has its own PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db import Job, Measurement, session_scope, upgrade
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.services import (  # noqa: F401 - fixtures
    PrivatePostgres,
    PrivateRedis,
    WorkerProcess,
    private_pg,
    private_redis,
    wait_for,
    worker_env,
    workers,
)
from worker.core.settings import Settings

pytestmark = pytest.mark.integration

PATIENT_ID = "PHI-4471-0923"
PATIENT_NAME = "Quixote^Dulcinea"
FINISHED = ("done", "needs_review", "failed")


def _scans(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` small (200x300) head phantoms with a known patient identity."""
    ident = ScanIdentity(patient_id=PATIENT_ID, patient_name=PATIENT_NAME, study_date=dt.date(2026, 3, 1))
    paths = []
    for i in range(n):
        phantom = make_phantom(shape=(200, 300), hc_mm=90.0 + (i % 7) * 5, spacing_mm=0.2, seed=seed + i)
        paths.append(write_us_image(folder / f"scan{i:03d}.dcm", phantom.image, phantom.spacing_mm, identity=ident))
    return paths


def _settings(monkeypatch: pytest.MonkeyPatch, database_url: str, broker_url: str) -> Settings:
    """This process's settings (and Celery app) on the test's services, for enqueueing."""
    import worker.queue.celery_app
    from worker.core.settings import get_settings

    monkeypatch.setenv("FETALHC_DATABASE_URL", database_url)
    monkeypatch.setenv("FETALHC_BROKER_URL", broker_url)
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    upgrade(database_url)
    return get_settings()


@pytest.fixture(autouse=True)
def _fresh_settings() -> object:
    from worker.core.settings import get_settings

    yield
    get_settings.cache_clear()


def _status_counts(url: str) -> Counter[str]:
    with session_scope(url) as s:
        return Counter(dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all()))


def _all_finished(url: str, n: int) -> bool:
    try:
        counts = _status_counts(url)
    except Exception:  # noqa: BLE001 - the database may be down on purpose
        return False
    return sum(counts.values()) == n and sum(counts[s] for s in FINISHED) == n


def _assert_one_row_per_scan(url: str, paths: list[Path]) -> None:
    with session_scope(url) as s:
        rows = s.scalars(select(Measurement)).all()
        jobs = s.scalars(select(Job)).all()
    by_path = Counter(r.path for r in rows)
    assert sorted(by_path) == sorted(str(p.resolve()) for p in paths)
    assert set(by_path.values()) == {1}, [p for p, n in by_path.items() if n > 1]
    assert len({r.sop_instance_uid for r in rows}) == len(paths)
    assert {j.status for j in jobs} <= {"done", "needs_review"}, Counter(j.status for j in jobs)
    assert all(r.status in ("measured", "needs_review") and r.hc_mm for r in rows)


def _json_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def _assert_no_patient_data(log: str) -> None:
    for value in (PATIENT_ID, PATIENT_NAME, "Quixote", "Dulcinea"):
        assert value.lower() not in log.lower(), f"patient identifier {value!r} in the worker's log"


def _requeued(log: str) -> int:
    return sum(line.get("requeued", 0) for line in _json_lines(log) if line.get("logger") == "worker.queue.sweep")


# -- 1 ---------------------------------------------------------------------------------------------------------

def test_kill_9_mid_batch_then_new_worker_gives_one_row_per_scan(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from worker.queue.enqueue import enqueue_files

    paths = _scans(tmp_path / "scans", 50)
    settings = _settings(monkeypatch, pg_url, private_redis.url)
    assert enqueue_files(settings, paths).queued == 50
    env = worker_env(pg_url, private_redis.url, tmp_path)

    first = WorkerProcess(env, tmp_path / "worker1.log")
    workers.append(first)

    def mid_batch() -> bool:  # >= 8 scans done and one that started a moment ago (a scan takes >= 0.1 s)
        just_now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(milliseconds=60)
        with session_scope(pg_url) as s:
            done = s.scalar(select(func.count()).where(Job.status.in_(("done", "needs_review"))))
            started = s.scalar(select(func.count()).where(Job.status == "running", Job.started_at > just_now))
        return bool(done >= 8 and started)

    assert wait_for(mid_batch, timeout=120, interval=0.05), first.log()[-3000:]
    first.kill()  # SIGKILL to the main process and its pool child together
    at_kill = _status_counts(pg_url)
    with session_scope(pg_url) as s:
        interrupted = [j.id for j in s.scalars(select(Job).where(Job.status == "running"))]
    assert at_kill["queued"] > 0 and interrupted, at_kill  # really in the middle

    second = WorkerProcess(env, tmp_path / "worker2.log")
    workers.append(second)
    assert wait_for(lambda: _all_finished(pg_url, 50), timeout=150), (_status_counts(pg_url), second.log()[-3000:])

    _assert_one_row_per_scan(pg_url, paths)
    with session_scope(pg_url) as s:
        attempts = {j.id: j.attempts for j in s.scalars(select(Job))}
    assert all(attempts[j] == 2 for j in interrupted)  # killed once, then run by the new worker
    # The sweeper sent the interrupted jobs again, not the 40-odd jobs waiting in the queue: those ran once.
    assert all(n == 1 for j, n in attempts.items() if j not in interrupted), attempts
    # The attempts are the record that counts: under a loaded CI run the interrupted jobs were once sent
    # again and run with no sweeper line found in the worker's log (a file its processes all write to).
    assert _requeued(second.log()) <= 5


def test_kill_9_of_a_pool_process_puts_its_scan_back_at_once(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    """reject_on_worker_lost: the main process returns a dead child's message (no sweeper needed)."""
    import os
    import signal

    from worker.queue.enqueue import enqueue_files

    paths = _scans(tmp_path / "scans", 8, seed=50)
    settings = _settings(monkeypatch, pg_url, private_redis.url)
    assert enqueue_files(settings, paths).queued == 8
    worker = WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path, SWEEP_INTERVAL="0"),
                           tmp_path / "worker.log")
    workers.append(worker)

    def just_started() -> list[int]:
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(milliseconds=60)
        with session_scope(pg_url) as s:
            done = s.scalar(select(func.count()).where(Job.status == "done"))
            ids = list(s.scalars(select(Job.id).where(Job.status == "running", Job.started_at > since)))
        return ids if done >= 2 else []

    assert wait_for(lambda: bool(just_started()), timeout=120, interval=0.03), worker.log()[-3000:]
    children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    with session_scope(pg_url) as s:
        interrupted = list(s.scalars(select(Job.id).where(Job.status == "running")))
    assert interrupted

    assert wait_for(lambda: _all_finished(pg_url, 8), timeout=120), (_status_counts(pg_url), worker.log()[-3000:])
    _assert_one_row_per_scan(pg_url, paths)
    with session_scope(pg_url) as s:
        assert [s.get(Job, j).attempts for j in interrupted] == [2] * len(interrupted)  # type: ignore[union-attr]
    assert worker.alive and "WorkerLostError" in worker.log()


# -- 2 ---------------------------------------------------------------------------------------------------------

def test_redis_restart_while_enqueueing_loses_no_scan(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from worker.queue.enqueue import enqueue_one

    paths = _scans(tmp_path / "scans", 26, seed=100)
    settings = _settings(monkeypatch, pg_url, private_redis.url)
    workers.append(WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path), tmp_path / "worker.log"))
    for path in paths[:2]:  # the worker is up and measuring before the outage
        enqueue_one(settings, path, "live", "test")
    assert wait_for(lambda: _all_finished(pg_url, 2), timeout=120), workers[0].log()[-3000:]
    sent: list[bool] = []
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for path in paths[2:]:
                sent.append(enqueue_one(settings, path, "live", "test")[1])
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        assert wait_for(lambda: len(sent) >= 8, timeout=60, interval=0.02)
        private_redis.stop()  # everything in Redis is lost
        time.sleep(6)  # longer than a publish's retries: some sends fail and leave their jobs 'received'
        private_redis.start()  # same port, empty
    finally:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(sent) == 24

    assert wait_for(lambda: _all_finished(pg_url, 26), timeout=150), (_status_counts(pg_url), workers[0].log()[-3000:])
    _assert_one_row_per_scan(pg_url, paths)
    # The outage mattered: some sends failed (jobs left received) or queued messages were lost,
    # and the sweeper sent them again.
    assert sent.count(False) + _requeued(workers[0].log()) >= 1


# -- 3 ---------------------------------------------------------------------------------------------------------

def test_postgres_restart_while_worker_runs_tasks_retry_and_finish(
        monkeypatch: pytest.MonkeyPatch, private_pg: PrivatePostgres, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from db import dispose_all
    from worker.queue.enqueue import enqueue_files

    paths = _scans(tmp_path / "scans", 20, seed=200)
    settings = _settings(monkeypatch, private_pg.url, private_redis.url)
    assert enqueue_files(settings, paths).queued == 20
    # The sweeper is kept out of the way (STALE_AFTER 300 s): the retries alone must finish every scan.
    worker = WorkerProcess(worker_env(private_pg.url, private_redis.url, tmp_path, STALE_AFTER="300"),
                           tmp_path / "worker.log")
    workers.append(worker)

    assert wait_for(lambda: _status_counts(private_pg.url)["done"] >= 3, timeout=120, interval=0.1), worker.log()[-3000:]
    dispose_all()
    private_pg.stop("fast")  # ends every session, mid-transaction or not
    time.sleep(4)
    private_pg.start()

    assert wait_for(lambda: _all_finished(private_pg.url, 20), timeout=150), \
        (_status_counts(private_pg.url), worker.log()[-3000:])
    _assert_one_row_per_scan(private_pg.url, paths)
    log = worker.log()
    retried = [line for line in _json_lines(log) if "retry" in line["message"].lower()]
    assert retried, "no task met the outage"
    assert _requeued(log) == 0
    assert worker.alive
    _assert_no_patient_data(log)


# -- 4 ---------------------------------------------------------------------------------------------------------

def test_corrupt_files_fail_with_reasons_the_rest_finish_and_the_worker_lives(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from worker.queue.enqueue import enqueue_files

    folder = tmp_path / "scans"
    good = _scans(folder, 5, seed=300)
    data = _scans(tmp_path / "other", 1, seed=350)[0].read_bytes()  # an instance of its own
    (folder / "junk.dcm").write_bytes(b"\x00garbage" * 40)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])
    phantom = make_phantom(shape=(200, 300), hc_mm=120.0, spacing_mm=0.2, seed=9)
    write_us_image(folder / "uncalibrated.dcm", phantom.image, 0.2, regions=False,
                   identity=ScanIdentity(patient_id=PATIENT_ID, patient_name=PATIENT_NAME))
    shutil.copy(_scans(tmp_path / "other2", 1, seed=360)[0], folder / "gone.dcm")
    bad = {"junk.dcm": "not_dicom", "empty.dcm": "not_dicom", "truncated.dcm": "truncated",
           "uncalibrated.dcm": "uncalibrated", "gone.dcm": "missing_file"}
    order = [good[0], folder / "junk.dcm", good[1], folder / "empty.dcm", folder / "truncated.dcm", good[2],
             folder / "uncalibrated.dcm", good[3], folder / "gone.dcm", good[4]]
    settings = _settings(monkeypatch, pg_url, private_redis.url)
    assert enqueue_files(settings, order).queued == 10
    (folder / "gone.dcm").unlink()  # removed after it was queued

    worker = WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path), tmp_path / "worker.log")
    workers.append(worker)
    assert wait_for(lambda: _all_finished(pg_url, 10), timeout=120), (_status_counts(pg_url), worker.log()[-3000:])

    with session_scope(pg_url) as s:
        jobs = {Path(j.path).name: j for j in s.scalars(select(Job))}
        rows = s.scalars(select(Measurement)).all()
    for name, reason in bad.items():
        assert (jobs[name].status, jobs[name].reason) == ("failed", reason), name
        assert jobs[name].detail
    assert all(jobs[p.name].status in ("done", "needs_review") for p in good)
    assert sum(r.status in ("measured", "needs_review") for r in rows) == 5

    log = worker.log()
    assert worker.alive
    assert "WorkerLostError" not in log and "exited with signal" not in log
    lines = _json_lines(log)
    measured_by = {line["process"] for line in lines if line["logger"] == "worker.measure.pipeline"}
    assert len(measured_by) == 1  # one pool process did every scan: none died and was replaced
    assert {line.get("job_id") for line in lines} >= {j.id for j in jobs.values()}  # each job's lines say so
    _assert_no_patient_data(log)


# -- 5 ---------------------------------------------------------------------------------------------------------

def test_same_scan_sent_twice_gives_one_result_row(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from worker.queue.enqueue import enqueue_one, send

    a, b = _scans(tmp_path / "scans", 2, seed=400)
    again = tmp_path / "spool" / "a-again.dcm"  # the same instance stored a second time elsewhere
    again.parent.mkdir(parents=True)
    shutil.copy(a, again)
    settings = _settings(monkeypatch, pg_url, private_redis.url)
    a_live, _ = enqueue_one(settings, a, "live", "live")
    a_backfill, _ = enqueue_one(settings, a, "backfill", "backfill")  # live and backfill
    a_stored_again, _ = enqueue_one(settings, again, "live", "live")  # C-STORE twice
    b_job, _ = enqueue_one(settings, b, "live", "live")
    send(b_job, str(b.resolve()), "live")  # one job, two messages (a sweep that raced a slow worker)

    workers.append(WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path), tmp_path / "worker.log",
                                 concurrency=2))
    assert wait_for(lambda: _all_finished(pg_url, 4), timeout=120), (_status_counts(pg_url), workers[0].log()[-3000:])
    time.sleep(2)  # time for the duplicated message to be handled too

    with session_scope(pg_url) as s:
        rows = s.scalars(select(Measurement)).all()
        jobs = {j.id: j for j in s.scalars(select(Job))}
    assert len(rows) == 2 and len({r.sop_instance_uid for r in rows}) == 2  # one row per scan
    assert all(j.status in ("done", "needs_review") for j in jobs.values())
    assert len({jobs[a_live].sop_instance_uid, jobs[a_backfill].sop_instance_uid,
                jobs[a_stored_again].sop_instance_uid}) == 1
    assert {j.sop_instance_uid for j in jobs.values()} == {r.sop_instance_uid for r in rows}
    import redis

    client = redis.Redis.from_url(private_redis.url)
    assert client.llen("live") == 0 and client.llen("backfill") == 0  # every message consumed
