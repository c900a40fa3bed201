"""The SR owed for each measurement: ``measurements.sr_status`` (pending | done | failed; NULL: none owed).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: existing rows read NULL (no SR owed), so the sweep never exports the history
    # of rows measured before this revision; ADD COLUMN without a table copy on SQLite or a rewrite on
    # PostgreSQL. The index serves the sweep's search for pending SRs.
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.add_column(sa.Column("sr_status", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_measurements_sr_status"), ["sr_status"], unique=False)


def downgrade() -> None:
    # An SR left pending is then only in the outbox (if it was written) or lost, as before this revision.
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.drop_index(batch_op.f("ix_measurements_sr_status"))
        batch_op.drop_column("sr_status")
