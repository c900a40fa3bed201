"""Celery messages are not trusted over the job row (issue 21, item 5): forged messages on the real Redis.

A job is recorded for scan A (no GA). Messages are pushed into Redis for it by hand: one naming ``/etc/passwd``,
one naming another scan B with a GA of 150 days, and a batch mixing a forged item with B's own job. Each is read
back from Redis and run as a worker would run it. The forged ones are refused (logged by job id only: no path,
no patient data) and the job stays as it was; its own message then measures A with no GA; nothing ever opens
``/etc/passwd`` or stores the forged GA.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from db import Job, JobStatus, Measurement, create_job, session_scope, set_job_status
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.worker.ingest_support import make_settings

PATIENT_ID = "PHI-FORGED-4411"


def _scan(path: Path, seed: int) -> Path:
    phantom = make_phantom(shape=(200, 300), hc_mm=160.0 + seed, spacing_mm=0.2, seed=seed)
    return write_us_image(path, phantom.image, 0.2,
                          identity=ScanIdentity(patient_id=PATIENT_ID, study_date=dt.date(2026, 2, 1)))


def _job(url: str, path: Path) -> int:
    with session_scope(url) as s:
        job_id = create_job(s, str(path.resolve()), "live", "live")
        set_job_status(s, job_id, JobStatus.QUEUED)
    return job_id


def _drain(redis_url: str, queue: str) -> list[tuple[str, list[Any]]]:
    """Every message waiting on ``queue`` (task name, args), taken off Redis as a worker takes them."""
    client = redis.Redis.from_url(redis_url)
    out = []
    while (raw := client.rpop(queue)) is not None:
        message = json.loads(raw)
        out.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]))
    return out


def test_forged_messages_are_refused_and_the_row_is_the_truth(monkeypatch: pytest.MonkeyPatch, pg_url: str,
                                                              redis_url: str, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from db import upgrade
    from worker.queue.celery_app import get_app
    from worker.queue.tasks import measure, measure_batch

    torch.set_num_threads(1)
    caplog.set_level(logging.INFO)
    make_settings(monkeypatch, redis_url, pg_url, tmp_path, HEAD_PLANE_GATE="off")  # phantoms: measured, not gated
    upgrade(pg_url)
    a, b = _scan(tmp_path / "a.dcm", 1), _scan(tmp_path / "b.dcm", 2)
    job_a, job_b = _job(pg_url, a), _job(pg_url, b)
    opened: list[str] = []
    real_open = open

    def watching_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    app = get_app()
    for args in ([job_a, "/etc/passwd", 99.0], [job_a, str(b.resolve()), 150.0], [job_a, str(a.resolve()), 150.0]):
        app.send_task("fetalhc.measure", args=args, queue="live")
    app.send_task("fetalhc.measure_batch", args=[[[job_a, "/etc/passwd", None], [job_b, str(b.resolve()), None]]],
                  queue="live")
    forged = _drain(redis_url, "live")
    assert len(forged) == 4
    monkeypatch.setattr("builtins.open", watching_open)
    results = [measure.run(*args) if name == "fetalhc.measure" else measure_batch.run(*args)
               for name, args in forged]
    monkeypatch.setattr("builtins.open", real_open)
    assert [r["status"] for r in results[:3]] == ["refused"] * 3
    assert all(r["reason"] == "message_mismatch" for r in results[:3])
    assert [r["status"] for r in results[3]["results"]][0] == "refused"  # the forged item of the batch
    assert results[3]["results"][1]["status"] in ("measured", "needs_review", "not_head")  # B's own item is measured
    assert "/etc/passwd" not in opened
    with session_scope(pg_url) as s:
        assert s.get(Job, job_a).status == JobStatus.QUEUED.value  # left for its own message
        assert s.get(Job, job_a).attempts == 0

    app.send_task("fetalhc.measure", args=[job_a, str(a.resolve()), None], queue="live")  # its own message
    [(name, args)] = _drain(redis_url, "live")
    assert measure.run(*args)["status"] in ("measured", "needs_review", "not_head")
    with session_scope(pg_url) as s:
        rows = {r.job_id: r for r in s.scalars(select(Measurement))}
        assert rows[job_a].path == str(a.resolve()) and rows[job_a].ga_days is None
        assert rows[job_a].ga_source != "given" and rows[job_b].path == str(b.resolve())
    refusals = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(refusals) == 4 and all(f"job {job_a}:" in m for m in refusals)
    assert "/etc/passwd" not in caplog.text and PATIENT_ID not in caplog.text and str(tmp_path) not in " ".join(
        refusals)
