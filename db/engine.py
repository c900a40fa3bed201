"""Engines and sessions: one cached engine per URL, created on first use (never at import)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import database_revision, migrate

_ENGINES: dict[str, Engine] = {}
_SESSIONMAKERS: dict[str, sessionmaker[Session]] = {}
_UPGRADED: dict[str, str] = {}  # URL -> revision this process brought it to (upgrade() is called often)


def get_engine(url: str) -> Engine:
    """The engine for ``url`` (cached); SQLite files get WAL and a busy timeout so workers can share them."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = _create_engine(url)
    return engine


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            _create_private(Path(parsed.database).expanduser())
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # hide_parameters: a failed statement's message (logged by retries) must not carry the row's
    # values, which include patient IDs.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


def _create_private(path: Path) -> None:
    """Create the SQLite file owner read/write, group read (0640: it holds patient IDs); SQLite gives its
    -wal and -shm files the same mode. An existing file is left as it is."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))
        os.chmod(path, 0o640)  # whatever the umask
    except FileExistsError:
        pass


def upgrade(url: str) -> str:
    """Migrate the database to the newest schema revision and return it (idempotent; cached per URL).

    Safe to call from several processes at once, and on a database made before migrations
    existed (it is adopted, never recreated); see ``db.migrate.migrate``.
    """
    revision = _UPGRADED.get(url)
    if revision is None:
        revision = _UPGRADED[url] = migrate(get_engine(url))
    return revision


def current_revision(url: str) -> str | None:
    """The schema revision stamped in the database now (None: empty, or made before migrations)."""
    return database_revision(get_engine(url))


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    maker = _SESSIONMAKERS.get(url)
    if maker is None:
        maker = _SESSIONMAKERS[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    session = maker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all(close: bool = True) -> None:
    """Dispose and forget every engine and upgrade (between tests; after a fork with ``close=False``).

    ``close=False`` leaves the pooled connections alone: in a forked child they are the parent's
    sockets, and closing them would end the parent's sessions.
    """
    for engine in _ENGINES.values():
        engine.dispose(close=close)
    _ENGINES.clear()
    _SESSIONMAKERS.clear()
    _UPGRADED.clear()
