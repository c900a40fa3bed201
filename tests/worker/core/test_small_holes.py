"""The smaller holes of the intake review: a poison scan's failed row, private file modes, redacted tracebacks."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import update

from db import Job, JobStatus, create_job, get_engine, query_measurements, session_scope, set_job_status, upgrade
from worker.core.logs import JsonFormatter, RedactLibraryRecords
from worker.core.settings import Settings, get_settings


@pytest.fixture()
def env(fetalhc_env: pytest.MonkeyPatch) -> Settings:
    settings = get_settings()
    upgrade(settings.database_url)
    return settings


def test_a_poison_scan_gets_a_failed_measurement_row(env: Settings, tmp_path: Path) -> None:
    from worker.queue.tasks import measure

    path = tmp_path / "kills-workers.dcm"
    path.write_bytes(b"never opened again")
    with session_scope(env.database_url) as s:
        job_id = create_job(s, str(path), "live", "live", sop_instance_uid="1.2.3.4.5")
        set_job_status(s, job_id, JobStatus.RUNNING)
        s.execute(update(Job).where(Job.id == job_id).values(attempts=env.max_attempts))

    assert measure.run(job_id, str(path), None)["reason"] == "poison"

    with session_scope(env.database_url) as s:
        [row] = query_measurements(s, status="failed")
        assert (row.sop_instance_uid, row.status, row.reason) == ("1.2.3.4.5", "failed", "poison")


def test_a_new_sqlite_database_is_not_world_readable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'fetalhc.db'}"
    old = os.umask(0o022)
    try:
        upgrade(url)
    finally:
        os.umask(old)
    get_engine(url).dispose()
    mode = stat.S_IMODE((tmp_path / "new" / "fetalhc.db").stat().st_mode)
    assert mode == 0o640


def test_our_own_tracebacks_are_redacted_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactLibraryRecords())
    logger = logging.getLogger("worker.test_small_holes")
    logger.addHandler(handler)
    try:
        try:
            raise FileNotFoundError("/archive/DOE_JANE/1.dcm: patient 'Doe^Jane' missing")
        except FileNotFoundError:
            logger.exception("could not read a scan")
    finally:
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["message"] == "could not read a scan" and record["exc_type"] == "FileNotFoundError"
    assert "DOE_JANE" not in record["exc"] and "Doe^Jane" not in record["exc"]
    assert "<path>" in record["exc"]
