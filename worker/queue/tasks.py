"""Thin Celery tasks: take job ids, call the pipeline; retries only for transient errors.

Every task is idempotent, so a redelivered or duplicated message is harmless: finished jobs are
skipped, and measurements are upserts keyed by (SOP Instance UID, frame, model version).

The job row (written by the intake before its message) is the truth: a task measures the row's path with the
row's GA. A message whose path or GA is not its job's (forged, or pushed into Redis by hand) is refused and
logged by job id only, and the job is left as it was for its own message or the sweeper.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from db import (
    FINISHED_JOB_STATUSES,
    JOB_STATUS_OF,
    UNFINISHED_JOB_STATUSES,
    JobStatus,
    get_job,
    session_scope,
    set_job_status,
)
from dicom_io.bounds import scan_budget
from models.errors import TransientError
from worker.core import metrics
from worker.core.logs import job_context
from worker.core.settings import Settings, get_settings
from worker.measure.pipeline import WorkItem, load_context, measure_items
from worker.queue.celery_app import LIVE_QUEUE
from worker.queue.enqueue import BROKER_ERRORS, send

log = logging.getLogger(__name__)

# Database, broker or network trouble: worth retrying with backoff. Everything about the scan
# itself (unreadable, uncalibrated, no head) is permanent and recorded by the pipeline.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError, RedisConnectionError, RedisTimeoutError,
    KombuOperationalError, ConnectionError, TimeoutError)
MAX_RETRIES = 8  # backoff 2, 4, 8, ... 60 s (full jitter): a few minutes of outage before giving up


_RETRY = dict(autoretry_for=(TransientError,), retry_backoff=2, retry_backoff_max=60, retry_jitter=True,
              max_retries=MAX_RETRIES, acks_late=True)


@shared_task(bind=True, name="fetalhc.measure", **_RETRY)
def measure(self: Any, job_id: int, path: str, ga_days: float | None = None) -> dict[str, Any]:
    """Measure one queued scan and record it; returns a short summary (no patient data)."""
    with job_context([job_id]):
        return _measure_jobs(self, [(job_id, path, ga_days)])[0]


@shared_task(bind=True, name="fetalhc.measure_batch", **_RETRY)
def measure_batch(self: Any, items: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Measure several queued scans together (one forward pass per ``BATCH_SIZE`` on a GPU).

    ``items``: [job id, path, GA days or None] each. Redelivered after a worker died while it ran,
    the batch is split into single ``fetalhc.measure`` messages, so a scan that kills workers
    takes only itself down and reaches the poison cap alone.
    """
    triples = [(int(i[0]), str(i[1]), None if i[2] is None else float(i[2])) for i in items]
    with job_context([t[0] for t in triples]):
        if _interrupted_before(triples, self.request.retries):
            queue = (self.request.delivery_info or {}).get("routing_key") or LIVE_QUEUE
            return {"split": _split(triples, queue)}
        return {"results": _measure_jobs(self, triples)}


def _interrupted_before(triples: Sequence[tuple[int, str, float | None]], retries: int) -> bool:
    """True when an unfinished job of the batch started more often than this message's retries explain.

    (Each retry of the batch starts its jobs once more; any other start was a run that died.)
    """
    settings = get_settings()
    try:
        with session_scope(settings.database_url) as session:
            jobs = [get_job(session, job_id) for job_id, _, _ in triples]
            return any(j is not None and j.status not in FINISHED_JOB_STATUSES and j.attempts > retries for j in jobs)
    except TRANSIENT_ERRORS as exc:
        raise TransientError(f"database: {type(exc).__name__}") from exc


def _split(triples: Sequence[tuple[int, str, float | None]], queue: str) -> int:
    try:
        for job_id, path, ga in triples:
            send(job_id, path, queue, ga)
    except BROKER_ERRORS as exc:
        raise TransientError(f"broker: {type(exc).__name__}") from exc
    log.info("batch of %d scans interrupted before: sent again one by one", len(triples))
    return len(triples)


def _measure_jobs(task: Any, triples: Sequence[tuple[int, str, float | None]]) -> list[dict[str, Any]]:
    """Claim the unfinished jobs, measure them in one pipeline call, record outcome and metrics."""
    settings = get_settings()
    ctx = load_context(settings)  # before claiming: a worker that cannot load its model leaves jobs alone
    try:
        summaries, todo, received_at = _claim(settings, triples, task.request.retries, ctx)
    except TRANSIENT_ERRORS as exc:
        raise TransientError(f"database: {type(exc).__name__}") from exc
    if todo:
        items = [WorkItem(Path(path), job_id, ga) for job_id, path, ga in todo]
        try:
            with scan_budget(settings.max_scan_mb):  # FETALHC_MAX_SCAN_MB bounds each scan's decoding
                rows = measure_items(ctx, items)
        except TRANSIENT_ERRORS as exc:
            if task.request.retries >= task.max_retries:
                _fail_all(settings, [t[0] for t in todo], "retries_exhausted",
                          "transient database or broker errors did not clear within the retry budget")
            raise TransientError(f"database: {type(exc).__name__}") from exc
        except SoftTimeLimitExceeded:
            _fail_all(settings, [t[0] for t in todo], "time_limit",
                      f"not measured within FETALHC_TASK_TIME_LIMIT ({settings.task_time_limit_s:g} s)")
            rows = [{"job_id": t[0], "status": "failed", "reason": "time_limit"} for t in todo]
        except Exception as exc:  # noqa: BLE001 - a bug must fail its scans, never the worker
            log.exception("unexpected error measuring %d scans", len(todo))
            _fail_all(settings, [t[0] for t in todo], "internal_error", f"unexpected {type(exc).__name__}")
            rows = [{"job_id": t[0], "status": "failed", "reason": "internal_error"} for t in todo]
        now = dt.datetime.now(dt.timezone.utc)
        for row in rows:
            job_id = row["job_id"]
            job_status = JOB_STATUS_OF[row["status"]]
            metrics.record_scan(job_status, row.get("reason"),
                                seconds=row["total_ms"] / 1000 if row.get("total_ms") is not None else None,
                                turnaround_s=(now - received_at[job_id]).total_seconds()
                                if received_at.get(job_id) else None)
            summaries[job_id] = {"job_id": job_id, "status": row["status"], "reason": row.get("reason"),
                                 "hc_mm": row.get("hc_mm")}
        for item in items:  # an SR (an OB-GYN report) is recorded, not measured: its job is done, no row
            if item.report is not None and item.job_id is not None:
                summaries[item.job_id] = {"job_id": item.job_id, "status": JobStatus.DONE.value,
                                          "reason": item.report.reason, "report": True}
    return [summaries[job_id] for job_id, _, _ in triples]


def _claim(settings: Settings, triples: Sequence[tuple[int, str, float | None]], retries: int,
           ctx: Any = None) -> tuple[
        dict[int, dict[str, Any]], list[tuple[int, str, float | None]], dict[int, dt.datetime]]:
    """Mark the unfinished jobs running; summaries for the others (unknown, finished, poison)."""
    summaries: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, str, float | None]] = []
    received_at: dict[int, dt.datetime] = {}
    with session_scope(settings.database_url) as session:
        for job_id, path, ga in triples:
            job = get_job(session, job_id)
            if job is None:
                log.warning("job %s does not exist; dropping its message", job_id)
                summaries[job_id] = {"job_id": job_id, "status": "unknown_job"}
            elif job.status in FINISHED_JOB_STATUSES:
                summaries[job_id] = {"job_id": job_id, "status": job.status, "duplicate": True}
            elif (disagree := _disagrees(job, path, ga)) is not None:
                # The row is the truth; no path, GA or patient data in the log (the path may name a patient).
                log.warning("job %s: refused a message whose %s is not the job's", job_id, disagree)
                summaries[job_id] = {"job_id": job_id, "status": "refused", "reason": "message_mismatch"}
            elif job.attempts - retries >= settings.max_attempts:
                # Started again and again without finishing (each time a worker died or the task
                # was cut off), not counting this message's own retries: a poison scan. Stop.
                set_job_status(session, job_id, JobStatus.FAILED, reason="poison",
                               detail=f"gave up after {job.attempts} attempts that did not finish")
                log.error("job %s failed as poison after %d attempts", job_id, job.attempts)
                if ctx is not None and job.sop_instance_uid:  # so `fetalhc results --status failed` shows it
                    _poison_row(session, ctx, job.sop_instance_uid, job.path, job.attempts)
                metrics.record_scan(JobStatus.FAILED.value, "poison")
                summaries[job_id] = {"job_id": job_id, "status": "failed", "reason": "poison"}
            else:
                set_job_status(session, job_id, JobStatus.RUNNING, only_from=UNFINISHED_JOB_STATUSES)
                received_at[job_id] = _aware(job.received_at)
                todo.append((job_id, job.path, job.ga_days_given))  # the row's, which the message matched
    return summaries, todo, received_at


def _disagrees(job: Any, path: str, ga: float | None) -> str | None:
    """Which field of a message is not its job row's (``path`` or ``GA``); None when both match."""
    if str(path) != str(job.path):
        return "path"
    given = job.ga_days_given
    if (ga is None) != (given is None) or (ga is not None and abs(float(ga) - float(given)) > 1e-6):
        return "GA"
    return None


def _poison_row(session: Any, ctx: Any, sop_instance_uid: str, path: str, attempts: int) -> None:
    """A failed measurement row for a poison scan (its file is not opened again: it kills workers)."""
    from db import MeasurementStatus, upsert_measurement

    upsert_measurement(session, {
        "sop_instance_uid": sop_instance_uid, "frame": 1, "path": path, "model_name": ctx.model.model_name,
        "model_version": ctx.model.model_version, "status": MeasurementStatus.FAILED.value, "reason": "poison",
        "detail": f"gave up after {attempts} attempts that did not finish"})


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands back naive UTC
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _fail_all(settings: Settings, job_ids: Sequence[int], reason: str, detail: str) -> None:
    try:
        with session_scope(settings.database_url) as session:
            for job_id in job_ids:
                set_job_status(session, job_id, JobStatus.FAILED, reason=reason, detail=detail,
                               only_from=UNFINISHED_JOB_STATUSES)
    except TRANSIENT_ERRORS as exc:
        log.error("%d jobs: could not record their failure (%s) either; the sweeper will find them",
                  len(job_ids), type(exc).__name__)
        return
    for _ in job_ids:
        metrics.record_scan(JobStatus.FAILED.value, reason)
