"""Index the results queries' orders: ``measurements`` by (study_date, id) and by (status, study_date, id).

``fetalhc results`` and the API list rows in study-date order, first N: a date range or a status then
reads the index in that order and stops after N rows, instead of sorting every matching row (at a
million rows a 30-day range took 171 ms and a status 66 ms, p95, on SQLite). On PostgreSQL building
them takes a lock on writes to ``measurements`` for as long as the build (seconds per million rows).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.create_index("ix_measurements_study_date", ["study_date", "id"], unique=False)
        batch_op.create_index("ix_measurements_status_date", ["status", "study_date", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.drop_index("ix_measurements_status_date")
        batch_op.drop_index("ix_measurements_study_date")
