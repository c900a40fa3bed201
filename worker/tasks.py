"""Thin Celery tasks: take ids and paths, call the pipeline; retries only for transient errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import shared_task
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import InterfaceError, OperationalError

from db import JobStatus, get_job, session_scope, set_job_status
from worker.pipeline import WorkItem, load_context, measure_items
from worker.settings import get_settings

log = logging.getLogger(__name__)

# Database, broker or network trouble: worth retrying with backoff. Everything about the scan
# itself (unreadable, uncalibrated, no head) is permanent and recorded by the pipeline.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, RedisConnectionError,
                                                     ConnectionError, TimeoutError)
MAX_RETRIES = 8


@shared_task(bind=True, name="fetalhc.measure", autoretry_for=TRANSIENT_ERRORS, retry_backoff=2,
             retry_backoff_max=60, retry_jitter=True, max_retries=MAX_RETRIES, acks_late=True)
def measure(self: Any, job_id: int, path: str, ga_days: float | None = None) -> dict[str, Any]:
    """Measure one queued scan and record it; returns a short summary (no patient data)."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = get_job(session, job_id)
        if job is None:
            log.warning("job %s does not exist; dropping the message", job_id)
            return {"job_id": job_id, "status": "unknown_job"}
        if job.status in (JobStatus.DONE.value, JobStatus.NEEDS_REVIEW.value, JobStatus.FAILED.value):
            return {"job_id": job_id, "status": job.status, "duplicate": True}
        if job.attempts >= settings.max_attempts:
            # Delivered again and again (a worker died each time): a poison scan. Stop here.
            set_job_status(session, job_id, JobStatus.FAILED, reason="poison",
                           detail=f"gave up after {job.attempts} attempts that did not finish")
            return {"job_id": job_id, "status": "failed", "reason": "poison"}
        set_job_status(session, job_id, JobStatus.RUNNING)
    try:
        row = measure_items(load_context(settings), [WorkItem(Path(path), job_id, ga_days)])[0]
    except TRANSIENT_ERRORS:
        if self.request.retries >= MAX_RETRIES:
            _fail_quietly(settings.database_url, job_id, "retries_exhausted")
        raise
    return {"job_id": job_id, "status": row["status"], "reason": row.get("reason"), "hc_mm": row.get("hc_mm")}


def _fail_quietly(url: str, job_id: int, reason: str) -> None:
    try:
        with session_scope(url) as session:
            set_job_status(session, job_id, JobStatus.FAILED, reason=reason,
                           detail="transient errors did not clear within the retry budget")
    except TRANSIENT_ERRORS:
        log.error("job %s: could not record its failure either; the sweeper will find it", job_id)
