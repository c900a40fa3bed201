"""Arrivals that contradict an earlier one: the ``intake_conflicts`` table; the patient's issuer and birth date on
``measurements`` and ``ob_reports``, so that a report applies only to rows of its own patient.

``intake_conflicts``: an instance received again under a UID already taken, with another patient's identity or
other pixels (kept beside the first copy, not measured), and a report whose patient is not its study's (no row
changed): what arrived, where it was kept, both patients' IDs. The new columns are nullable: rows stored before
read NULL (compared by Patient ID alone). ADD COLUMN rewrites nothing on PostgreSQL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PATIENT_TABLES = ("measurements", "ob_reports")


def upgrade() -> None:
    op.create_table(
        "intake_conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("kept_path", sa.Text(), nullable=True),
        sa.Column("existing_path", sa.Text(), nullable=True),
        sa.Column("patient_id_existing", sa.String(length=64), nullable=True),
        sa.Column("patient_id_received", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_intake_conflicts_sop_instance_uid", "intake_conflicts", ["sop_instance_uid"])
    for table in _PATIENT_TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=True))
            batch_op.add_column(sa.Column("patient_birth_date", sa.Date(), nullable=True))


def downgrade() -> None:
    for table in _PATIENT_TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("patient_birth_date")
            batch_op.drop_column("issuer_of_patient_id")
    op.drop_index("ix_intake_conflicts_sop_instance_uid", table_name="intake_conflicts")
    op.drop_table("intake_conflicts")
