"""The worker's ``/metrics`` endpoint: the pool processes' counters (``worker.core.metrics``) plus values read on
each scrape (Redis queue depths, the jobs table's counts by status)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from db import JobStatus, job_counts, session_scope
from worker.core.metrics import MULTIPROC_ENV
from worker.core.settings import Settings
from worker.queue.sweep import queue_depths, redis_client

log = logging.getLogger(__name__)


class WorkerCollector:
    """Values read on each scrape: Redis queue depths and the jobs table's counts by status."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    def collect(self) -> Iterator[Any]:
        # prometheus_client is imported only once PROMETHEUS_MULTIPROC_DIR is set (worker.core.metrics).
        from prometheus_client.core import GaugeMetricFamily

        broker_up = GaugeMetricFamily("fetalhc_broker_up", "1 when the Redis queues could be read")
        try:
            if self._client is None:
                self._client = redis_client(self.settings.broker_url)
            depths = queue_depths(self._client)
        except Exception as exc:  # noqa: BLE001 - report the outage as a value, not a failed scrape
            log.debug("queue depth unavailable: %s", type(exc).__name__)
            broker_up.add_metric([], 0)
        else:
            broker_up.add_metric([], 1)
            depth = GaugeMetricFamily("fetalhc_queue_depth", "Messages waiting in a Redis queue", labels=["queue"])
            for queue, n in depths.items():
                depth.add_metric([queue], n)
            yield depth
        yield broker_up

        database_up = GaugeMetricFamily("fetalhc_database_up", "1 when the jobs table could be read")
        try:
            with session_scope(self.settings.database_url) as session:
                counts = job_counts(session)
        except Exception as exc:  # noqa: BLE001
            log.debug("job counts unavailable: %s", type(exc).__name__)
            database_up.add_metric([], 0)
        else:
            database_up.add_metric([], 1)
            jobs = GaugeMetricFamily("fetalhc_jobs", "Jobs in the database by status", labels=["status"])
            for status in JobStatus:
                jobs.add_metric([status.value], counts.get(status.value, 0))
            yield jobs
        yield database_up


def build_registry(settings: Settings) -> Any:
    """The registry served by the worker: pool processes' counts (multiprocess) plus scrape-time values."""
    from prometheus_client import (
        CollectorRegistry,  # after PROMETHEUS_MULTIPROC_DIR (worker.core.metrics)
    )
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    registry.register(WorkerCollector(settings))
    return registry


def start_metrics_server(settings: Settings, addr: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``settings.metrics_port`` from a daemon thread; returns the server."""
    from prometheus_client import (
        start_http_server,  # after PROMETHEUS_MULTIPROC_DIR (worker.core.metrics)
    )
    try:
        server, _ = start_http_server(settings.metrics_port, addr=addr, registry=build_registry(settings))
    except OSError as exc:
        log.error("metrics endpoint not started: port %d: %s (set FETALHC_METRICS_PORT, 0 disables)",
                  settings.metrics_port, exc.strerror)
        return None
    log.info("metrics on http://%s:%d/metrics", addr, settings.metrics_port)
    return server
