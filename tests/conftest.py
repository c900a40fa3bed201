"""Shared fixtures: real services (PostgreSQL, Redis) or a clear skip; a failure under CI=true."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("FETALHC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FETALHC_TEST_REDIS", "redis://127.0.0.1:6379/15")
HC18_DIR = Path(os.environ.get("FETALHC_HC18_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "hc18"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip when a service or data set is missing on a laptop; fail under CI, where it must exist."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI but is not available", pytrace=False)
    pytest.skip(f"{what} is not available here")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def hc18_dir() -> Path:
    """The HC18 folder (../shared/hc18); skipped where absent (HC18 is never committed)."""
    require((HC18_DIR / "training_set").is_dir(), f"HC18 data at {HC18_DIR}")
    return HC18_DIR


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a real PostgreSQL server."""
    require(_port_open("127.0.0.1", 5432), "PostgreSQL on 127.0.0.1:5432")
    return PG_ADMIN_URL


@pytest.fixture()
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    import psycopg

    name = f"fetalhc_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        from db import dispose_all

        dispose_all()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def redis_url() -> str:
    """A real Redis (database 15), emptied before the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
        ok = True
    except redis.exceptions.ConnectionError:
        ok = False
    require(ok, f"Redis at {REDIS_URL}")
    client.flushdb()
    return REDIS_URL


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    """An SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'fetalhc.db'}"


@pytest.fixture()
def fetalhc_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Settings isolated to this test: SQLite in tmp, spool in tmp; caches cleared before and after."""
    from db import dispose_all
    from worker.core.settings import get_settings

    monkeypatch.setenv("FETALHC_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("FETALHC_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FETALHC_DEVICE", "cpu")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
    dispose_all()
