"""The worker host's housekeeping, run by its companion process every ``FETALHC_SWEEP_INTERVAL``: the sweep for
lost jobs (``worker.queue.sweep``), one per interval across workers, then spool retention at most hourly."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from typing import Any

from worker.core.settings import Settings
from worker.ops.spool_retention import PruneSummary, prune_spool
from worker.queue.celery_app import create_app
from worker.queue.sweep import SWEEP_LOCK_KEY, SweepSummary, redis_client, sweep

log = logging.getLogger(__name__)

PRUNE_LOCK_KEY = "fetalhc:spool-prune-lock"
PRUNE_EVERY_S = 3600.0  # spool retention is counted in days: one prune an hour across workers is plenty


class PeriodicSweeper:
    """The sweep the worker's companion process (``worker.ops.sidecar``) runs every ``sweep_interval_s``.

    Several workers each run one: a Redis lock lets one of them sweep per interval. Errors
    (database or broker down) are logged, and the next interval tries again. With
    ``FETALHC_SPOOL_RETENTION_DAYS`` > 0 it also prunes the spool (``worker.ops.spool_retention``),
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
