"""Putting scans on the queue: a job row first (the source of truth), then the message."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from db import JobStatus, create_job, session_scope, set_job_status, stale_jobs, upgrade
from worker.celery_app import LIVE_QUEUE, get_app
from worker.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "fetalhc.measure"
BROKER_ERRORS = (KombuOperationalError, RedisConnectionError, ConnectionError, OSError)
# Publishing retries inside kombu before a message is left to the sweeper.
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 3.0}


@dataclass
class EnqueueSummary:
    """Counts of one enqueue call: queued now, or recorded and left for the sweeper."""

    queued: int = 0
    deferred: int = 0
    job_ids: list[int] | None = None


def send(job_id: int, path: str, queue: str, ga_days: float | None = None) -> None:
    """Publish one measure task (raises a broker error when Redis cannot be reached)."""
    get_app().send_task(TASK_NAME, args=[job_id, path, ga_days], queue=queue, retry=True, retry_policy=RETRY_POLICY)


def enqueue_files(settings: Settings, paths: Iterable[Path], queue: str = LIVE_QUEUE, source: str = "cli",
                  ga_days: dict[str, float] | None = None) -> EnqueueSummary:
    """Record a job per file, then queue it; a broker outage leaves the job ``received``.

    Nothing is lost either way: a received or queued job that never finishes is found by
    ``requeue_stale`` (``fetalhc requeue --stale``, and the periodic sweep).
    """
    upgrade(settings.database_url)
    summary = EnqueueSummary(job_ids=[])
    for path in paths:
        path_str = str(Path(path).resolve())
        ga = (ga_days or {}).get(path_str)
        with session_scope(settings.database_url) as session:
            job_id = create_job(session, path_str, source, queue, ga_days_given=ga)
        summary.job_ids.append(job_id)
        try:
            send(job_id, path_str, queue, ga)
        except BROKER_ERRORS as exc:
            summary.deferred += 1
            log.warning("job %s recorded but not queued (broker unreachable: %s); the sweeper will queue it",
                        job_id, type(exc).__name__)
            continue
        with session_scope(settings.database_url) as session:
            set_job_status(session, job_id, JobStatus.QUEUED)
        summary.queued += 1
    return summary


def enqueue_one(settings: Settings, path: str | Path, queue: str, source: str, ga_days: float | None = None,
                sop_instance_uid: str | None = None) -> tuple[int, bool]:
    """Record one job (committed), then queue it; returns (job id, whether the message was sent).

    Database errors propagate (nothing was recorded); a broker outage does not (the job stays
    ``received`` for the sweeper). The tables must exist (``db.upgrade``).
    """
    path_str = str(Path(path).resolve())
    with session_scope(settings.database_url) as session:
        job_id = create_job(session, path_str, source, queue, ga_days_given=ga_days,
                            sop_instance_uid=sop_instance_uid)
    try:
        send(job_id, path_str, queue, ga_days)
    except BROKER_ERRORS as exc:
        log.warning("job %s recorded but not queued (broker unreachable: %s); the sweeper will queue it",
                    job_id, type(exc).__name__)
        return job_id, False
    with session_scope(settings.database_url) as session:
        set_job_status(session, job_id, JobStatus.QUEUED, only_from=(JobStatus.RECEIVED,))
    return job_id, True


def requeue_stale(settings: Settings, older_than: dt.timedelta) -> EnqueueSummary:
    """Queue again every job left received, queued or running for longer than ``older_than``."""
    summary = EnqueueSummary(job_ids=[])
    with session_scope(settings.database_url) as session:
        jobs = [(j.id, j.path, j.queue or LIVE_QUEUE, j.ga_days_given) for j in stale_jobs(session, older_than)]
    for job_id, path, queue, ga in jobs:
        try:
            send(job_id, path, queue, ga)
        except BROKER_ERRORS:
            summary.deferred += 1
            continue
        with session_scope(settings.database_url) as session:
            set_job_status(session, job_id, JobStatus.QUEUED)
        summary.queued += 1
        summary.job_ids.append(job_id)
    if jobs:
        log.info("requeued %d stale jobs (%d left for later)", summary.queued, summary.deferred)
    return summary
