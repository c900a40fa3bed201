"""The sonographer's HC beside fetalhc's on each measurement: ``sonographer_hc_mm``, ``hc_diff_mm``, ``fetus_count``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: rows measured before read NULL (no report seen yet); the sweep fills the rows of
    # studies that have a report. ADD COLUMN needs no table copy on SQLite and no rewrite on PostgreSQL.
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.add_column(sa.Column("sonographer_hc_mm", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("hc_diff_mm", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("fetus_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.drop_column("fetus_count")
        batch_op.drop_column("hc_diff_mm")
        batch_op.drop_column("sonographer_hc_mm")
