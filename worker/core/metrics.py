"""Prometheus counters of a worker: scans by outcome and reason, latency, SRs, spool pruning (served by ops).

Pool processes count the scans they finish (``record_scan``) in Prometheus multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, prepared by ``fetalhc worker`` before anything starts); the
worker's companion process (``worker.ops.sidecar``, ``worker.ops.metrics_server``) serves them, summed, on
``FETALHC_METRICS_PORT`` together with values read on each scrape: the depth of the Redis queues (LLEN) and the jobs
table's counts by status.

Exposed:
    fetalhc_scans_total{status, reason}     scans this worker finished (done | needs_review | not_head | failed)
    fetalhc_scan_seconds                    histogram: time to measure and store one scan
    fetalhc_scan_turnaround_seconds         histogram: from job received to result stored
    fetalhc_queue_depth{queue}              messages waiting in Redis (live, backfill)
    fetalhc_jobs{status}                    jobs in the database by status (cluster-wide)
    fetalhc_broker_up, fetalhc_database_up  1 when the scrape could read them
    fetalhc_sr_reports_total{outcome}       DICOM SRs written | build_failed | sent | send_failed
    fetalhc_spool_pruned_files_total{kind}  spool files deleted by retention (job | orphan)
    fetalhc_spool_pruned_bytes_total{kind}  their bytes

Counters are per worker (sum them across workers); ``fetalhc_jobs`` is the same on every worker
(take one, or ``max``).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TURNAROUND_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


def prepare_multiprocess_dir() -> Path:
    """An empty multiprocess directory for this worker's processes (call before importing prometheus_client).

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when set (emptied of an earlier run's files), else a new
    temporary directory removed at exit.
    """
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        log.warning("prometheus_client was imported before its multiprocess directory was set; "
                    "pool processes' counts may be missing")
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        path = Path(existing)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="fetalhc-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=1)
def _scan_metrics() -> tuple[Any, Any, Any]:
    from prometheus_client import Counter, Histogram

    scans = Counter("fetalhc_scans", "Scans finished by this worker, by job status and failure reason",
                    ["status", "reason"])
    seconds = Histogram("fetalhc_scan_seconds", "Seconds to read, measure and store one scan",
                        buckets=SECONDS_BUCKETS)
    turnaround = Histogram("fetalhc_scan_turnaround_seconds", "Seconds from a scan's job received to its result",
                           buckets=TURNAROUND_BUCKETS)
    return scans, seconds, turnaround


def record_scan(status: str, reason: str | None = None, seconds: float | None = None,
                turnaround_s: float | None = None) -> None:
    """Count one finished scan (job status, failure reason) and its timings; never raises."""
    try:
        scans, latency, turnaround = _scan_metrics()
        scans.labels(status=status, reason=reason or "").inc()
        if seconds is not None:
            latency.observe(max(seconds, 0.0))
        if turnaround_s is not None:
            turnaround.observe(max(turnaround_s, 0.0))
    except Exception:  # noqa: BLE001 - metrics must never fail a scan
        log.debug("could not record a scan's metrics", exc_info=True)


@lru_cache(maxsize=1)
def _sr_counter() -> Any:
    from prometheus_client import Counter

    return Counter("fetalhc_sr_reports", "DICOM SR reports by outcome (written | build_failed | sent | send_failed)",
                   ["outcome"])


def record_sr(outcome: str) -> None:
    """Count one SR report outcome (``fetalhc_sr_reports_total{outcome}``); never raises."""
    try:
        _sr_counter().labels(outcome=outcome).inc()
    except Exception:  # noqa: BLE001 - metrics must never fail a scan
        log.debug("could not record an SR metric", exc_info=True)


@lru_cache(maxsize=1)
def _prune_counters() -> tuple[Any, Any]:
    from prometheus_client import Counter

    files = Counter("fetalhc_spool_pruned_files", "Spool files deleted by retention (job | orphan)", ["kind"])
    size = Counter("fetalhc_spool_pruned_bytes", "Bytes of spool files deleted by retention (job | orphan)", ["kind"])
    return files, size


def record_spool_prune(kind: str, files: int, size_bytes: int) -> None:
    """Count spool files deleted by retention (``kind``: job | orphan) and their bytes; never raises."""
    try:
        counter_files, counter_bytes = _prune_counters()
        counter_files.labels(kind=kind).inc(files)
        counter_bytes.labels(kind=kind).inc(size_bytes)
    except Exception:  # noqa: BLE001 - metrics must never fail a prune
        log.debug("could not record a spool prune metric", exc_info=True)
