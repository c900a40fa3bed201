"""A real worker with the shipped head-plane gate: a head measured, two real non-head scans set aside as not_head.

Real PostgreSQL and a private Redis; the non-heads are the demo's shipped samples (PSFHS, POCUS lung).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from db import Job, Measurement, session_scope, upgrade
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
from worker.tools.demo import SAMPLES_DIR

pytestmark = pytest.mark.integration
# The shipped samples that are not head planes, as their manifest lists them.
NEGATIVES = tuple(e["file"] for e in json.loads((SAMPLES_DIR / "samples.json").read_text()) if e["kind"] == "not_head")


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_worker_sets_non_heads_aside_counts_them_and_measures_the_head(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    import worker.queue.celery_app
    from worker.queue.enqueue import enqueue_files
    from worker.core.settings import get_settings

    scans = tmp_path / "scans"
    phantom = make_phantom(hc_mm=180.0, spacing_mm=0.15, seed=4)  # a bright skull ring: a head
    write_us_image(scans / "head.dcm", phantom.image, phantom.spacing_mm)
    for name in NEGATIVES:
        shutil.copyfile(SAMPLES_DIR / name, scans / name)
    monkeypatch.setenv("FETALHC_DATABASE_URL", pg_url)
    monkeypatch.setenv("FETALHC_BROKER_URL", private_redis.url)
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    upgrade(pg_url)
    assert enqueue_files(get_settings(), sorted(scans.iterdir())).queued == 3
    port = free_port()
    workers.append(WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path, METRICS_PORT=str(port),
                                            SWEEP_INTERVAL="0"), tmp_path / "worker.log", concurrency=1))

    def all_counted() -> bool:
        return _samples(port).get(("fetalhc_scan_seconds_count", ())) == 3

    assert wait_for(all_counted, timeout=200, interval=0.5), workers[0].log()[-3000:]
    get_settings.cache_clear()
    samples = _samples(port)

    assert samples[("fetalhc_scans_total", (("reason", "not_head_plane"), ("status", "not_head")))] == 2
    assert samples[("fetalhc_jobs", (("status", "not_head"),))] == 2
    with session_scope(pg_url) as s:
        jobs = {Path(j.path).name: j for j in s.scalars(select(Job))}
        rows = {Path(m.path).name: m for m in s.scalars(select(Measurement))}
        for name in NEGATIVES:
            assert (jobs[name].status, jobs[name].reason) == ("not_head", "not_head_plane")
            assert jobs[name].finished_at is not None
            row = rows[name]
            assert (row.status, row.hc_mm, row.ga_estimate_days, row.quality) == ("not_head", None, None, None)
            assert row.head_plane_score is not None and row.detail.startswith("not a head plane: head-plane score")
        head = rows["head.dcm"]
        assert jobs["head.dcm"].status in ("done", "needs_review")
        assert head.hc_mm == pytest.approx(phantom.hc_mm, rel=0.08)
        assert head.head_plane_score is not None and head.head_plane_score > rows[NEGATIVES[0]].head_plane_score
