"""Alembic environment: migrate on the connection ``db.migrate`` hands over, or on a URL (developers' CLI).

At run time ``db.migrate.upgrade`` puts an open connection, inside its transaction and lock, in
``config.attributes["connection"]``. From the ``alembic`` command line (``alembic -c db/alembic.ini``)
the URL comes from ``-x url=...``, else ``sqlalchemy.url``, else ``FETALHC_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from db.migrate import configure_kwargs

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url") \
        or os.environ.get("FETALHC_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: pass -x url=..., or set FETALHC_DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **configure_kwargs(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Offline (``--sql``): print the SQL; online: run on the given connection or a fresh engine."""
    if context.is_offline_mode():
        url = _url()
        context.configure(url=url, literal_binds=True, **configure_kwargs(url.split(":", 1)[0].split("+")[0]))
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


main()
