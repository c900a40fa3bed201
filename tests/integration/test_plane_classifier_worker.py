"""A real worker with SonoNet-16 (issue 19): the authors' abdomen screen set aside with its plane label, their
trans-ventricular screen measured with its own; with a damaged classifier file the worker measures nothing.

Real PostgreSQL and a private Redis; the classifier and the screens come from ../shared (skipped where absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db import Job, Measurement, session_scope, upgrade
from tests.conftest import require
from tests.services import (  # noqa: F401 - fixtures
    PrivateRedis,
    WorkerProcess,
    private_redis,
    wait_for,
    worker_env,
    workers,
)
from tests.worker.plane_support import EXAMPLES, SONONET, example_scan

pytestmark = pytest.mark.integration


def _enqueue(monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str, paths: list[Path]) -> None:
    import worker.queue.celery_app
    from worker.core.settings import get_settings
    from worker.queue.enqueue import enqueue_files

    monkeypatch.setenv("FETALHC_DATABASE_URL", pg_url)
    monkeypatch.setenv("FETALHC_BROKER_URL", redis_url)
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    upgrade(pg_url)
    assert enqueue_files(get_settings(), paths).queued == len(paths)
    get_settings.cache_clear()


def test_the_worker_labels_every_scan_and_sets_the_abdomen_aside(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    require(SONONET.is_file() and EXAMPLES.is_dir(), f"SonoNet-16 and its example screens in {SONONET.parents[1]}")
    scans = tmp_path / "scans"
    scans.mkdir()
    paths = [example_scan(name, scans) for name in ("ABDOMINAL", "BRAIN-TV")]
    _enqueue(monkeypatch, pg_url, private_redis.url, paths)
    workers.append(WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path, PLANE_CLASSIFIER=str(SONONET),
                                            SWEEP_INTERVAL="0"),
                                 tmp_path / "worker.log"))

    def finished() -> bool:
        with session_scope(pg_url) as s:
            return all(j.finished_at is not None for j in s.scalars(select(Job)))

    assert wait_for(finished, timeout=240, interval=0.5), workers[0].log()[-3000:]
    with session_scope(pg_url) as s:
        rows = {Path(m.path).name: m for m in s.scalars(select(Measurement))}
        jobs = {Path(j.path).name: j.status for j in s.scalars(select(Job))}
        abdomen, head = rows["ABDOMINAL.dcm"], rows["BRAIN-TV.dcm"]
        assert (jobs["ABDOMINAL.dcm"], abdomen.status, abdomen.hc_mm, abdomen.plane_label) == (
            "not_head", "not_head", None, "abdominal")
        assert abdomen.detail.startswith("not a head plane: SonoNet-16 says abdominal")
        assert len(abdomen.plane_probabilities) == 14 and abdomen.plane_probability > 0.8
        assert (jobs["BRAIN-TV.dcm"], head.status, head.plane_label) == ("done", "measured", "brain_tv")
        assert head.hc_mm is not None and head.plane_probability > 0.9


def test_a_worker_with_a_damaged_classifier_file_measures_nothing(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, private_redis: PrivateRedis, tmp_path: Path,
        workers: list[WorkerProcess]) -> None:
    from dicom_io.phantom import make_phantom
    from dicom_io.writer import write_us_image

    damaged = tmp_path / "SonoNet16.npz"
    damaged.write_bytes(b"PK\x03\x04" + b"\0" * 1000)  # a zip header and nothing else: a cut download
    phantom = make_phantom(hc_mm=180.0, spacing_mm=0.15, seed=4)
    path = write_us_image(tmp_path / "head.dcm", phantom.image, phantom.spacing_mm)
    _enqueue(monkeypatch, pg_url, private_redis.url, [path])
    workers.append(WorkerProcess(worker_env(pg_url, private_redis.url, tmp_path, PLANE_CLASSIFIER=str(damaged),
                                            SWEEP_INTERVAL="0"), tmp_path / "worker.log"))

    assert wait_for(lambda: "plane classifier" in workers[0].log(), timeout=120, interval=0.5), \
        workers[0].log()[-3000:]
    log = workers[0].log()
    assert str(damaged) in log and "not a readable .npz file" in log
    with session_scope(pg_url) as s:
        assert list(s.scalars(select(Measurement))) == []
        [job] = s.scalars(select(Job))
        assert (job.status, job.attempts) == ("queued", 0)  # left alone for a worker that can measure
