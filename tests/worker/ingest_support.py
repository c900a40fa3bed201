"""Helpers for the ingest and backfill tests: settings on real Redis, queue contents, small US files."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from db import Job, session_scope
from dicom_io.writer import ScanIdentity, write_us_image
from worker.core.settings import Settings


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_us(path: Path, study_date: dt.date | None = None, seed: int = 0, **ident: Any) -> Path:
    """A 32x48 US Image Storage file (enough for queueing; not a head to measure)."""
    image = np.random.default_rng(seed).integers(0, 255, (32, 48), dtype=np.uint8)
    return write_us_image(path, image, 0.2, identity=ScanIdentity(study_date=study_date, **ident))


def queued(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """The measure tasks waiting on ``queue`` in Redis (Celery protocol 2), oldest job first."""
    import redis

    client = redis.Redis.from_url(redis_url)
    out = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append({"task": message["headers"]["task"], "job_id": args[0], "path": args[1]})
    return sorted(out, key=lambda m: m["job_id"])


def make_settings(monkeypatch: pytest.MonkeyPatch, redis_url: str, database_url: str, tmp_path: Path,
                  **env: str) -> Settings:
    """Process settings on this test's database, Redis db 15 and spool; the Celery app rebuilt for them."""
    import worker.queue.celery_app
    from worker.core.settings import get_settings

    monkeypatch.setenv("FETALHC_DATABASE_URL", database_url)
    monkeypatch.setenv("FETALHC_BROKER_URL", redis_url)
    monkeypatch.setenv("FETALHC_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FETALHC_DEVICE", "cpu")
    for key, value in env.items():
        monkeypatch.setenv(f"FETALHC_{key}", value)
    monkeypatch.setattr(worker.queue.celery_app, "_APP", None)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture()
def ingest_settings(monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings on SQLite in tmp_path and the real Redis (db 15); caches cleared afterwards."""
    from db import dispose_all
    from worker.core.settings import get_settings

    yield make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'ingest.db'}", tmp_path)
    get_settings.cache_clear()
    dispose_all()


def job_row(settings: Settings, job_id: int) -> Job:
    """The job row as stored now (a detached copy)."""
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job
