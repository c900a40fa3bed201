"""Head-plane recognition: ``measurements.head_plane_score``; statuses gain ``not_head`` (no DDL: strings).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: SQLite's batch mode adds it with ALTER TABLE ADD COLUMN
    # (no table copy), PostgreSQL likewise without rewriting the table; existing rows read NULL.
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.add_column(sa.Column("head_plane_score", sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column by copying the table (batch mode); rows set aside as not_head keep
    # their status string, which older code treats as a finished, unknown outcome.
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.drop_column("head_plane_score")
