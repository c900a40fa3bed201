"""Schema migrations (Alembic): bring a database to the newest revision under a lock, adopt pre-Alembic ones.

Alembic is configured here in code (no ``alembic.ini`` at run time); the scripts live in
``db/migrations``. ``db/alembic.ini`` is only for developers' ``alembic`` command line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, text

from db.tables import Base
from models.errors import SchemaError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema that ``create_all`` made before migrations existed
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock key shared by every fetalhc process on a database: the bytes of "fetalhc".
PG_LOCK_KEY = int.from_bytes(b"fetalhc", "big")


def configure_kwargs(dialect: str) -> dict[str, Any]:
    """Options for ``EnvironmentContext.configure``/``MigrationContext``, shared by env.py and the checks."""
    return {"target_metadata": Base.metadata, "render_as_batch": dialect == "sqlite", "compare_type": True,
            "compare_server_default": True}


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` built in code; with ``connection``, env.py migrates on that connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this fetalhc ships (e.g. ``"0001"``)."""
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head


def database_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None (empty, or created before migrations)."""
    with engine.connect() as conn:
        return _revision(conn)


def migrate(engine: Engine) -> str:
    """Upgrade the database to head and return the revision; only a version read when already there.

    The work runs in one transaction holding a lock, so several workers starting together wait
    for the first: PostgreSQL takes a transaction-level advisory lock, SQLite ``BEGIN IMMEDIATE``
    (its write lock on the file). A database made by ``create_all`` before migrations (the
    tables, no ``alembic_version``) is checked against the baseline and stamped, never recreated.
    """
    head = head_revision()
    if database_revision(engine) == head:
        return head
    with _locked(engine) as conn:
        current = _revision(conn)  # again: another process may have finished while we waited
        if current != head:
            _check_known(current, head)
            if current is None and _adopt_if_pre_alembic(conn):
                current = BASELINE
            if current != head:
                command.upgrade(alembic_config(conn), "head")
                log.info("database schema upgraded from %s to %s", current or "empty", head)
    return head


def schema_differences(engine: Engine, metadata: MetaData | None = None) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty: in step).

    ``metadata`` defaults to ``db.tables``; each difference is an Alembic diff tuple such as
    ``("add_column", None, "measurements", Column(...))``.
    """
    target = Base.metadata if metadata is None else metadata
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={**configure_kwargs(conn.dialect.name),
                                                         "target_metadata": target})
        return list(compare_metadata(context, target))


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            # pysqlite starts no transaction before DDL by itself; take the file's write lock now.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn
        conn.commit()


def _revision(conn: Connection) -> str | None:
    """Read ``alembic_version`` directly (MigrationContext would log its set-up on every call)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"the database has several schema revisions at once ({', '.join(sorted(rows))}); "
                          "fetalhc migrations are linear: fix alembic_version by hand")
    return rows[0] if rows else None


def _check_known(current: str | None, head: str) -> None:
    if current is None:
        return
    try:
        _scripts().get_revision(current)
    except CommandError:
        raise SchemaError(f"the database is at schema revision {current!r}, which this fetalhc does not know "
                          f"(its newest is {head!r}): run a fetalhc at least as new as the one that "
                          "migrated it") from None


def _adopt_if_pre_alembic(conn: Connection) -> bool:
    """Stamp a ``create_all`` database at the baseline; False when none of its tables exist (empty)."""
    wanted = _baseline_columns()
    inspector = inspect(conn)
    present = set(inspector.get_table_names()) & set(wanted)
    if not present:
        return False
    missing = [f"table {t}" for t in sorted(set(wanted) - present)]
    for table in sorted(present):
        have = {c["name"] for c in inspector.get_columns(table)}
        missing += [f"{table}.{c}" for c in sorted(wanted[table] - have)]
    if missing:
        raise SchemaError("the database holds fetalhc tables from before migrations, but not the schema of "
                          f"revision {BASELINE} (missing: {', '.join(missing)}); add those columns by hand or "
                          "start from a new database, then run `fetalhc db upgrade` again")
    command.stamp(alembic_config(conn), BASELINE)
    log.info("adopted a database created before migrations: stamped at %s", BASELINE)
    return True


@lru_cache(maxsize=1)
def _baseline_columns() -> dict[str, frozenset[str]]:
    """Tables and columns that the baseline revision creates (run on an in-memory SQLite, read back)."""
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn, opts={"render_as_batch": True})
            script = _scripts().get_revision(BASELINE)
            if script is None:  # pragma: no cover - shipped with the package
                raise SchemaError(f"baseline revision {BASELINE} is missing from {MIGRATIONS_DIR}")
            with Operations.context(context):
                script.module.upgrade()
            inspector = inspect(conn)
            return {t: frozenset(c["name"] for c in inspector.get_columns(t)) for t in inspector.get_table_names()}
    finally:
        engine.dispose()
