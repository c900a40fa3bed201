"""Alembic migrations of the results database (``env.py``, ``script.py.mako``, ``versions/``)."""
