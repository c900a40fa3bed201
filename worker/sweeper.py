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
commit and its export, or a destination that was down), at most ``worker.sr_export.SWEEP_BATCH`` of
them; SR trouble never fails the sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db import UNFINISHED_JOB_STATUSES, JobStatus, session_scope, set_job_status, stale_jobs
from worker.celery_app import LIVE_QUEUE, QUEUES, app_for, create_app
from worker.enqueue import BROKER_ERRORS, send
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.spool_retention import PruneSummary

log = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "fetalhc:sweep-lock"
PRUNE_LOCK_KEY = "fetalhc:spool-prune-lock"
PRUNE_EVERY_S = 3600.0  # spool retention is counted in days: one prune an hour across workers is plenty
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
    return summary


def _export_lost_reports(settings: Settings, older_than: dt.timedelta) -> int:
    """The SRs still owed, exported (``worker.sr_export.export_pending``); how many; never raises."""
    if settings.sr_dir is None and settings.sr_destination is None:
        return 0
    try:
        from worker.sr_export import export_pending

        return len(export_pending(settings, older_than).done)
    except Exception as exc:  # noqa: BLE001 - an SR problem must never break the sweep
        log.warning("SR export skipped: %s", type(exc).__name__)
        return 0


class PeriodicSweeper:
    """The sweep the worker's companion process (``worker.sidecar``) runs every ``sweep_interval_s``.

    Several workers each run one: a Redis lock lets one of them sweep per interval. Errors
    (database or broker down) are logged, and the next interval tries again. With
    ``FETALHC_SPOOL_RETENTION_DAYS`` > 0 it also prunes the spool (``worker.spool_retention``),
    at most once per ``PRUNE_EVERY_S`` across workers (another Redis lock, left to expire).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval_s = settings.sweep_interval_s
        self.older_than = dt.timedelta(seconds=settings.stale_after_s)
        self._app: Any = None
        self._client: Any = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"

    def warn_if_too_eager(self) -> None:
        """Log when STALE_AFTER is so short that scans still running or retrying get sent again."""
        if self.settings.stale_after_s < self.settings.task_time_limit_s + 60:
            log.warning("FETALHC_STALE_AFTER (%.0f s) is shorter than a task's time limit plus a retry's backoff: "
                        "scans still running may be sent twice (harmless, but wasted work)",
                        self.settings.stale_after_s)

    def run_once(self) -> SweepSummary | None:
        """One sweep if this process wins the interval's lock; None when another sweeper has it."""
        if self._client is None:
            self._client = redis_client(self.settings.broker_url)
        if self._app is None:  # an app of its own, never the process's current one
            self._app = create_app(self.settings, set_as_current=False)
        ttl_ms = max(int(self.interval_s * 900), 100)
        if not self._client.set(SWEEP_LOCK_KEY, self._owner, nx=True, px=ttl_ms):
            return None
        return sweep(self.settings, self.older_than, app=self._app, client=self._client)

    def prune_once(self) -> PruneSummary | None:
        """Prune the spool if retention is on and no sweeper pruned within ``PRUNE_EVERY_S``; else None."""
        if not self.settings.spool_retention_days:
            return None
        from worker.spool_retention import prune_spool

        if self._client is None:
            self._client = redis_client(self.settings.broker_url)
        if not self._client.set(PRUNE_LOCK_KEY, self._owner, nx=True, px=int(PRUNE_EVERY_S * 1000)):
            return None
        try:
            return prune_spool(self.settings, dt.timedelta(days=self.settings.spool_retention_days))
        except Exception:
            if self._client.get(PRUNE_LOCK_KEY) == self._owner.encode():  # failed: the next interval tries again
                self._client.delete(PRUNE_LOCK_KEY)
            raise

    def tick(self) -> SweepSummary | None:
        """``run_once``, then ``prune_once``, each with any error logged (by type: messages may hold SQL)."""
        try:
            summary = self.run_once()
        except Exception as exc:  # noqa: BLE001 - the sweeper outlives outages; the next interval retries
            log.warning("sweep skipped: %s", type(exc).__name__)
            summary = None
        try:
            self.prune_once()
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("spool prune skipped: %s", type(exc).__name__)
        return summary
