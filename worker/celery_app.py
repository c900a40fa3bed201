"""The Celery application, made by a factory (never at import): queues, reliability settings."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from worker.settings import Settings, get_settings

LIVE_QUEUE = "live"
BACKFILL_QUEUE = "backfill"
QUEUES = (LIVE_QUEUE, BACKFILL_QUEUE)

_APP: Celery | None = None


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app on the settings' broker with the DESIGN.md queue rules.

    Late acknowledgement + reject on worker loss + prefetch 1: a scan is removed from Redis only
    after its row is written, and a killed worker's scan goes back to the queue. Tasks are
    idempotent (upserts), so a redelivery is harmless.
    """
    settings = settings or get_settings()
    app = Celery("fetalhc", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(LIVE_QUEUE), Queue(BACKFILL_QUEUE)],
        task_default_queue=LIVE_QUEUE,
        # Workers consume 'live' before 'backfill' (both listed; live first).
        broker_transport_options={
            # Redelivery of unacked messages after a lost worker; above the worst task.
            "visibility_timeout": int(settings.task_time_limit_s * 4),
            "queue_order_strategy": "priority",
        },
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_time_limit_s * 0.9,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def get_app() -> Celery:
    """The process's app (created on first call from the current settings)."""
    global _APP
    if _APP is None:
        _APP = create_app()
    return _APP
