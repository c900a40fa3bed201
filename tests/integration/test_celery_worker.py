"""A real Celery worker process on the real Redis writes rows for queued scans into a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db import Job, Measurement, session_scope, upgrade
from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from tests.services import wait_for

pytestmark = pytest.mark.integration


def _env(pg_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"FETALHC_DATABASE_URL": pg_url, "FETALHC_BROKER_URL": redis_url, "FETALHC_DEVICE": "cpu",
                "FETALHC_SPOOL_DIR": str(tmp_path / "spool"), "PYTHONUNBUFFERED": "1"})
    return env


def test_worker_measures_enqueued_scans_into_postgres(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    truths = {}
    for i, hc in enumerate((150.0, 230.0)):
        phantom = make_phantom(hc_mm=hc, spacing_mm=0.14, seed=10 + i)
        path = write_us_image(scans / f"scan{i}.dcm", phantom.image, phantom.spacing_mm)
        truths[str(path.resolve())] = phantom.hc_mm
    (scans / "junk.dcm").write_bytes(b"\x00" * 300)  # a corrupt file among good ones
    upgrade(pg_url)
    env = _env(pg_url, redis_url, tmp_path)
    fetalhc = [sys.executable, "-m", "worker.cli"]

    enqueued = subprocess.run([*fetalhc, "enqueue", "--json", str(scans)], env=env, capture_output=True, text=True,
                              timeout=120)
    assert enqueued.returncode == 0, enqueued.stderr
    assert '"queued": 3' in enqueued.stdout

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([*fetalhc, "worker", "--concurrency", "1"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def finished() -> bool:
            with session_scope(pg_url) as s:
                return all(j.status in ("done", "needs_review", "failed") for j in s.scalars(select(Job))) \
                    and len(s.scalars(select(Job)).all()) == 3
        assert wait_for(finished, timeout=240), (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()

    with session_scope(pg_url) as s:
        jobs = {Path(j.path).name: j for j in s.scalars(select(Job))}
        rows = s.scalars(select(Measurement)).all()
        assert (jobs["junk.dcm"].status, jobs["junk.dcm"].reason) == ("failed", "not_dicom")
        assert len(rows) == 2
        for row in rows:
            assert row.status in ("measured", "needs_review")
            assert row.hc_mm == pytest.approx(truths[row.path], rel=0.08)
            assert row.spacing_source == "us_region"
            assert row.job_id == jobs[Path(row.path).name].id
