"""The Celery application, made by a factory (never at import): queues and reliability settings.

The worker process that runs it (pool, companion, signals) is ``worker.ops.worker_process``.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from worker.core.settings import Settings, get_settings

LIVE_QUEUE = "live"
BACKFILL_QUEUE = "backfill"
QUEUES = (LIVE_QUEUE, BACKFILL_QUEUE)


_APP: Celery | None = None
_PUBLISHERS: dict[str, Celery] = {}  # broker URL -> app, for settings that name another broker


def create_app(settings: Settings | None = None, set_as_current: bool = True) -> Celery:
    """A Celery app on the settings' broker with the DESIGN.md queue rules.

    Late acknowledgement + reject on worker loss + prefetch 1: a scan is removed from Redis only
    after its row is written, and a killed worker's scan goes back to the queue. Tasks are
    idempotent (upserts; finished jobs are skipped), so a redelivery is harmless. A message is
    acknowledged when its task fails or times out: the job row stays unfinished and the sweeper
    (``worker.queue.sweep``) sends it again, up to ``MAX_ATTEMPTS`` runs.
    """
    settings = settings or get_settings()
    app = Celery("fetalhc", broker=settings.broker_url, include=["worker.queue.tasks"], set_as_current=set_as_current)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(LIVE_QUEUE), Queue(BACKFILL_QUEUE)],
        task_default_queue=LIVE_QUEUE,
        # Workers consume 'live' before 'backfill' (both listed; live first).
        broker_transport_options={
            # Redelivery of unacked messages after a lost worker; above the worst task (a task may
            # wait for a free process for one task time, then run for one).
            "visibility_timeout": int(settings.task_time_limit_s * 4),
            "queue_order_strategy": "priority",
        },
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_time_limit_s * 0.9,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # outlive a long Redis outage instead of exiting
        # A task running when the broker connection drops finishes and writes its row; its ack is
        # lost with the connection and the message (if Redis kept it) comes back, to be skipped.
        worker_cancel_long_running_tasks_on_connection_loss=False,
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


def app_for(settings: Settings) -> Celery:
    """An app that publishes to ``settings.broker_url``: the process's app when it uses that broker.

    Code that is handed a ``Settings`` (enqueue, backfill, the listener) sends where those settings
    say, not where the process's environment says.
    """
    app = get_app()
    if app.conf.broker_url == settings.broker_url:
        return app
    if settings.broker_url not in _PUBLISHERS:
        _PUBLISHERS[settings.broker_url] = create_app(settings, set_as_current=False)
    return _PUBLISHERS[settings.broker_url]
