"""Prometheus metrics: a real worker's endpoint scraped, and the scrape-time values on their own."""

from __future__ import annotations

import datetime as dt
import urllib.request
from pathlib import Path

import pytest

from db import JobStatus, create_job, session_scope, set_job_status, upgrade
from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from tests.services import (  # noqa: F401 - fixtures
    PrivateRedis,
    WorkerProcess,
    free_port,
    private_redis,
    wait_for,
    worker_env,
    workers,
)
from worker.core.settings import Settings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


@pytest.mark.integration
def test_worker_serves_scan_counts_latency_and_queue_depth(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    import worker.queue.celery_app
    from worker.queue.enqueue import enqueue_files
    from worker.core.settings import get_settings

    for i in range(2):
        phantom = make_phantom(shape=(200, 300), hc_mm=110.0, spacing_mm=0.2, seed=i)
        write_us_image(tmp_path / "scans" / f"s{i}.dcm", phantom.image, 0.2)
    (tmp_path / "scans" / "junk.dcm").write_bytes(b"junk" * 100)
    monkeypatch.setenv("FETALHC_DATABASE_URL", pg_url)
    monkeypatch.setenv("FETALHC_BROKER_URL", private_redis.url)
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    upgrade(pg_url)
    assert enqueue_files(get_settings(), sorted((tmp_path / "scans").iterdir())).queued == 3
    port = free_port()
    workers.append(WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path, METRICS_PORT=str(port),
                                            SWEEP_INTERVAL="0"), tmp_path / "worker.log", concurrency=1))

    def all_counted() -> bool:
        text = _scrape(port)
        return text is not None and _samples(text).get(("fetalhc_scan_seconds_count", ())) == 3

    assert wait_for(all_counted, timeout=150, interval=0.5), workers[0].log()[-3000:]
    get_settings.cache_clear()
    samples = _samples(_scrape(port) or "")

    # Counted in the pool process, served by the main process (multiprocess mode).
    assert samples[("fetalhc_scans_total", (("reason", ""), ("status", "done")))] == 2
    assert samples[("fetalhc_scans_total", (("reason", "not_dicom"), ("status", "failed")))] == 1
    assert samples[("fetalhc_scan_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("fetalhc_scan_turnaround_seconds_count", ())] == 3
    # Read on the scrape: Redis queue depth and the jobs table.
    assert samples[("fetalhc_queue_depth", (("queue", "live"),))] == 0
    assert samples[("fetalhc_queue_depth", (("queue", "backfill"),))] == 0
    assert samples[("fetalhc_broker_up", ())] == 1 and samples[("fetalhc_database_up", ())] == 1
    assert samples[("fetalhc_jobs", (("status", "done"),))] == 2
    assert samples[("fetalhc_jobs", (("status", "failed"),))] == 1


def test_scrape_time_values_follow_redis_and_the_jobs_table(
        fetalhc_env: pytest.MonkeyPatch, private_redis: PrivateRedis) -> None:
    import redis
    from prometheus_client import CollectorRegistry, generate_latest

    from worker.ops.metrics_server import WorkerCollector
    from worker.core.settings import get_settings

    fetalhc_env.setenv("FETALHC_BROKER_URL", private_redis.url)
    get_settings.cache_clear()
    settings: Settings = get_settings()
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        for status in (JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.RUNNING):
            set_job_status(s, create_job(s, "/x.dcm", "test", "live"), status)
    client = redis.Redis.from_url(private_redis.url)
    client.lpush("live", "m1", "m2")
    client.lpush("backfill", "m3")
    client.lpush("backfill\x06\x163", "m4")  # a priority-3 message of the backfill queue
    registry = CollectorRegistry()
    registry.register(WorkerCollector(settings))

    samples = _samples(generate_latest(registry).decode())
    assert samples[("fetalhc_queue_depth", (("queue", "live"),))] == 2
    assert samples[("fetalhc_queue_depth", (("queue", "backfill"),))] == 2
    assert samples[("fetalhc_jobs", (("status", "queued"),))] == 2
    assert samples[("fetalhc_jobs", (("status", "running"),))] == 1

    private_redis.stop()  # an outage is a value, not a failed scrape
    samples = _samples(generate_latest(registry).decode())
    assert samples[("fetalhc_broker_up", ())] == 0
    assert not any(name == "fetalhc_queue_depth" for name, _ in samples)
    assert samples[("fetalhc_database_up", ())] == 1


def test_record_scan_counts_outcomes_by_reason() -> None:
    from prometheus_client import REGISTRY

    from worker.core.metrics import record_scan

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("fetalhc_scans_total", status="failed", reason="uncalibrated")
    count_before = value("fetalhc_scan_seconds_count")
    record_scan("failed", "uncalibrated", seconds=0.4, turnaround_s=dt.timedelta(minutes=2).total_seconds())
    assert value("fetalhc_scans_total", status="failed", reason="uncalibrated") == before + 1
    assert value("fetalhc_scan_seconds_count") == count_before + 1
