"""The scanners' OB-GYN reports: ``ob_reports`` (one per report instance) and ``ob_report_fetuses``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Two new tables, nothing existing touched: CREATE TABLE needs no batch copy on SQLite (constraints are
    # declared inline, the index after), and no rewrite on PostgreSQL. The unique SOP Instance UID is what
    # report upserts conflict on; the study index serves the dating look-ups of every measured image.
    op.create_table(
        "ob_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("content_datetime", sa.DateTime(), nullable=True),
        sa.Column("lmp", sa.Date(), nullable=True),
        sa.Column("edd", sa.Date(), nullable=True),
        sa.Column("edd_from_lmp", sa.Date(), nullable=True),
        sa.Column("ga_days_at_report", sa.Float(), nullable=True),
        sa.Column("ga_kind", sa.String(length=16), nullable=True),
        sa.Column("fetus_count", sa.Integer(), nullable=True),
        sa.Column("manufacturer", sa.String(length=64), nullable=True),
        sa.Column("model_name", sa.String(length=64), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_ob_reports_sop_instance_uid"),
    )
    with op.batch_alter_table("ob_reports") as batch_op:  # an index only: no table copy on SQLite
        batch_op.create_index(batch_op.f("ix_ob_reports_study_instance_uid"), ["study_instance_uid"], unique=False)
    op.create_table(
        "ob_report_fetuses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("fetus_number", sa.Integer(), nullable=False),
        sa.Column("fetus_id", sa.String(length=64), nullable=True),
        sa.Column("hc_mm", sa.Float(), nullable=True),
        sa.Column("bpd_mm", sa.Float(), nullable=True),
        sa.Column("ofd_mm", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["report_id"], ["ob_reports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("report_id", "fetus_number", name="uq_ob_report_fetus_number"),
    )


def downgrade() -> None:
    # The reports go with their tables: GA already written onto measurement rows stays there.
    op.drop_table("ob_report_fetuses")
    with op.batch_alter_table("ob_reports") as batch_op:
        batch_op.drop_index(batch_op.f("ix_ob_reports_study_instance_uid"))
    op.drop_table("ob_reports")
