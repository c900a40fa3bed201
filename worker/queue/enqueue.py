"""Putting scans on the queue: a job row first (the source of truth), then the message."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from db import JobStatus, create_job, session_scope, set_job_status, upgrade
from db.repository import create_jobs, mark_jobs_queued
from worker.core.settings import Settings
from worker.queue.celery_app import LIVE_QUEUE, app_for, get_app

log = logging.getLogger(__name__)

TASK_NAME = "fetalhc.measure"
BATCH_TASK_NAME = "fetalhc.measure_batch"
BROKER_ERRORS = (KombuOperationalError, RedisError, ConnectionError, OSError)
# Publishing retries inside kombu before a message is left to the sweeper.
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 3.0}


@dataclass
class EnqueueSummary:
    """Counts of one enqueue call: queued now, or recorded and left for the sweeper."""

    queued: int = 0
    deferred: int = 0
    job_ids: list[int] | None = None


def send(job_id: int, path: str, queue: str, ga_days: float | None = None, app: Any = None,
         producer: Any = None) -> None:
    """Publish one measure task (raises a broker error when Redis cannot be reached).

    ``producer``: a kombu producer held by the caller (``app.producer_or_acquire()``), so many
    messages share one connection; None acquires one from the pool for this message.
    """
    (app or get_app()).send_task(TASK_NAME, args=[job_id, path, ga_days], queue=queue, retry=True,
                                 retry_policy=RETRY_POLICY, producer=producer)


def send_batch(items: Sequence[tuple[int, str, float | None]], queue: str, app: Any = None,
               producer: Any = None) -> None:
    """Publish one measure_batch task for (job id, path, GA days) items (raises a broker error)."""
    (app or get_app()).send_task(BATCH_TASK_NAME, args=[[list(item) for item in items]], queue=queue, retry=True,
                                 retry_policy=RETRY_POLICY, producer=producer)


# Files recorded by one INSERT and published over one broker connection; memory stays flat in the archive's size.
ENQUEUE_CHUNK = 500


def enqueue_files(settings: Settings, paths: Iterable[Path], queue: str = LIVE_QUEUE, source: str = "cli",
                  ga_days: dict[str, float] | None = None, batch: int = 1,
                  chunk: int = ENQUEUE_CHUNK) -> EnqueueSummary:
    """Record a job per file, then queue it; a broker outage leaves the job ``received``.

    ``paths`` are read lazily, ``chunk`` at a time (rounded to whole batches): each chunk's jobs are
    written by one INSERT, its messages published over one producer connection, and those sent moved
    to ``queued`` by one UPDATE (``enqueue_batch``). ``batch`` > 1 groups that many scans per message
    (``fetalhc.measure_batch``: one forward pass over them on a GPU worker); 1 sends a
    ``fetalhc.measure`` message per scan. Nothing is lost either way: a received or queued job that
    never finishes is found by the sweeper (``worker.queue.sweep``: ``fetalhc requeue --stale`` and the
    worker's periodic sweep), and an interrupted run leaves every recorded job to it.
    """
    if batch < 1:
        raise ValueError(f"batch={batch}: at least 1 scan per message")
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: at least 1 file per chunk")
    upgrade(settings.database_url)
    summary = EnqueueSummary(job_ids=[])
    size = max(batch, chunk // batch * batch)
    pending: list[str] = []

    def flush() -> None:
        ids, sent = enqueue_batch(settings, pending, queue, source, ga_days, per_message=batch)
        summary.job_ids.extend(ids)
        summary.queued += sent
        summary.deferred += len(ids) - sent
        pending.clear()

    for path in paths:
        pending.append(str(Path(path).resolve()))
        if len(pending) >= size:
            flush()
    if pending:
        flush()
    return summary


def enqueue_batch(settings: Settings, paths: Sequence[str | Path], queue: str, source: str,
                  ga_days: dict[str, float] | None = None, per_message: int | None = None) -> tuple[list[int], int]:
    """Record a job per file (one INSERT, committed), publish them, and mark those sent ``queued`` (one UPDATE).

    ``per_message``: scans per ``fetalhc.measure_batch`` message (None: all of ``paths`` in one);
    1 publishes a ``fetalhc.measure`` message per scan. Every message goes over one producer
    connection. Returns the job ids and how many of them were sent: on a broker outage the first
    failed publish stops the rest, whose jobs stay ``received`` for the sweeper (it sends them one by one).
    Database errors propagate (before the INSERT commits nothing is recorded).
    """
    items = [(str(Path(p).resolve()), (ga_days or {}).get(str(Path(p).resolve()))) for p in paths]
    if not items:
        return [], 0
    with session_scope(settings.database_url) as session:
        job_ids = create_jobs(session, items, source, queue)
    triples = [(job_id, path, ga) for job_id, (path, ga) in zip(job_ids, items)]
    step = per_message or len(triples)
    sent = 0
    app = app_for(settings)
    try:
        with app.producer_or_acquire() as producer:
            for start in range(0, len(triples), step):
                group = triples[start:start + step]
                if step == 1:
                    job_id, path, ga = group[0]
                    send(job_id, path, queue, ga, app=app, producer=producer)
                else:
                    send_batch(group, queue, app=app, producer=producer)
                sent += len(group)
    except BROKER_ERRORS as exc:
        log.warning("%d jobs recorded but not queued (broker unreachable: %s); the sweeper will queue them",
                    len(job_ids) - sent, type(exc).__name__)
    if sent:
        with session_scope(settings.database_url) as session:
            mark_jobs_queued(session, job_ids[:sent])
    return job_ids, sent


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
        send(job_id, path_str, queue, ga_days, app=app_for(settings))
    except BROKER_ERRORS as exc:
        log.warning("job %s recorded but not queued (broker unreachable: %s); the sweeper will queue it",
                    job_id, type(exc).__name__)
        return job_id, False
    with session_scope(settings.database_url) as session:
        set_job_status(session, job_id, JobStatus.QUEUED, only_from=(JobStatus.RECEIVED,))
    return job_id, True
