"""Finding lost work: jobs left received, queued or running too long are sent to the queue again.

The database is the source of truth; Redis can lose messages (a restart without persistence, a
worker killed with its message unacknowledged until the visibility timeout). A job is *stale*
when it has been ``received``, ``queued`` or ``running`` for longer than ``older_than`` since its
last update. What is done with it:

- ``received``: its message was never sent (broker down at enqueue): send it.
- ``queued`` / ``running``: send it again only while its Redis queue is empty. While the queue
  holds messages, the job's message may simply be waiting its turn behind a long backlog, and
  re-sending it every sweep would grow the queue without end. Once the queue is empty, a message
  can only be held by a worker that is running it (then the job was updated when it started, less
  than ``older_than`` ago, when ``older_than`` exceeds a task's time limit plus a retry's backoff)
  or be gone. A lost message on a busy queue is therefore recovered when the queue drains, never
  duplicated while it waits. ``force`` skips this check.

Sending a job that still has a message is harmless: the task skips finished jobs and stores
measurements with idempotent upserts. Each sweep updates the jobs it sends, so a job is sent at
most once per ``older_than``; a job that never finishes is failed as poison after
``MAX_ATTEMPTS`` runs.

With SR export on (``FETALHC_SR_DIR`` or ``FETALHC_SR_DESTINATION``), each sweep then exports the SRs
still owed (``measurements.sr_status`` pending longer than ``older_than``: a worker lost between its
commit and its export, or a destination that was down), at most ``worker.measure.sr_export.SWEEP_BATCH`` of
them; SR trouble never fails the sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from db import (
    UNFINISHED_JOB_STATUSES,
    JobStatus,
    session_scope,
    set_job_status,
    stale_jobs,
)
from worker.core.settings import Settings
from worker.measure.reports import refresh_owing
from worker.measure.sr_export import export_pending
from worker.queue.celery_app import LIVE_QUEUE, QUEUES, app_for
from worker.queue.enqueue import BROKER_ERRORS, EnqueueSummary, send

log = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "fetalhc:sweep-lock"
# kombu's Redis transport keeps a queue's messages of priority p > 0 in the list "<queue>\x06\x16<p>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass
class SweepSummary:
    """What one sweep did: jobs sent again, jobs left waiting behind a busy queue, sends that failed."""

    requeued: list[int] = field(default_factory=list)
    waiting: int = 0
    deferred: int = 0
    sr_exported: int = 0  # SRs owed (pending) written or sent by this sweep
    report_rows: int = 0  # rows given their study's OB-GYN report facts by this sweep (a report and an image raced)

    def as_dict(self) -> dict[str, Any]:
        return {"requeued": len(self.requeued), "job_ids": self.requeued, "waiting": self.waiting,
                "deferred": self.deferred, "sr_exported": self.sr_exported}


def redis_client(broker_url: str) -> Any:
    """A Redis client on the broker, with timeouts (a sweep or a scrape must not hang)."""
    import redis

    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"FETALHC_BROKER_URL={broker_url.split('@')[-1]!r}: the queues must be on Redis "
                         "(redis://, rediss:// or unix://)")
    return redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)


def queue_depths(client: Any, queues: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages waiting in each Redis queue (all priority levels), not counting those held by workers."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for pri in _PRIORITY_STEPS:
            pipe.llen(f"{queue}{_PRIORITY_SEP}{pri}" if pri else queue)
    sizes = pipe.execute()
    steps = len(_PRIORITY_STEPS)
    return {queue: int(sum(sizes[i * steps:(i + 1) * steps])) for i, queue in enumerate(queues)}


def sweep(settings: Settings, older_than: dt.timedelta, force: bool = False, app: Any = None,
          client: Any = None) -> SweepSummary:
    """Send again the stale jobs (see the module docstring); returns what was done.

    Raises:
        redis.exceptions.RedisError: the queue depths cannot be read (nothing was sent).
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
    """
    depths = {} if force else queue_depths(client or redis_client(settings.broker_url))
    with session_scope(settings.database_url) as session:
        jobs = [(j.id, j.path, j.queue or LIVE_QUEUE, j.ga_days_given, j.status)
                for j in stale_jobs(session, older_than)]
    summary = SweepSummary()
    for job_id, path, queue, ga, status in jobs:
        if status != JobStatus.RECEIVED.value and depths.get(queue, 0) > 0:
            summary.waiting += 1
            continue
        try:
            send(job_id, path, queue, ga, app=app or app_for(settings))
        except BROKER_ERRORS:
            summary.deferred += 1
            continue
        with session_scope(settings.database_url) as session:  # never over a job that finished meanwhile
            set_job_status(session, job_id, JobStatus.QUEUED, only_from=UNFINISHED_JOB_STATUSES)
        summary.requeued.append(job_id)
    if summary.requeued or summary.deferred:
        log.info("sweep: sent %d stale jobs again (%d waiting behind a busy queue, %d not sent)",
                 len(summary.requeued), summary.waiting, summary.deferred,
                 extra={"requeued": len(summary.requeued), "waiting": summary.waiting, "deferred": summary.deferred})
    summary.sr_exported = _export_lost_reports(settings, older_than)
    try:  # rows whose study's report was recorded while they were being measured (bounded per sweep)
        summary.report_rows = refresh_owing(settings.database_url, settings.growth_standard)
    except Exception as exc:  # noqa: BLE001 - report facts must never break the sweep; the next one retries
        log.warning("report facts skipped: %s", type(exc).__name__)
    return summary


def _export_lost_reports(settings: Settings, older_than: dt.timedelta) -> int:
    """The SRs still owed, exported (``worker.measure.sr_export.export_pending``); how many; never raises."""
    if settings.sr_dir is None and settings.sr_destination is None:
        return 0
    try:
        return len(export_pending(settings, older_than).done)
    except Exception as exc:  # noqa: BLE001 - an SR problem must never break the sweep
        log.warning("SR export skipped: %s", type(exc).__name__)
        return 0


def requeue_stale(settings: Settings, older_than: dt.timedelta, force: bool = False) -> EnqueueSummary:
    """Queue again the jobs left received, queued or running for longer than ``older_than``.

    See ``sweep``: queued/running jobs are sent again only while their queue is
    empty (or with ``force``), so a message waiting behind a long backlog is not duplicated.
    """
    result = sweep(settings, older_than, force=force)
    return EnqueueSummary(queued=len(result.requeued), deferred=result.deferred, job_ids=result.requeued)
