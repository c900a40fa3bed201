"""Initial schema: ``jobs`` and ``measurements`` as ``create_all`` made them before migrations existed.

Databases created that way are stamped at this revision by ``db.migrate`` (never recreated).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ga_days_given", sa.Float(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_sop_instance_uid", "jobs", ["sop_instance_uid"], unique=False)
    op.create_index("ix_jobs_status", "jobs", ["status"], unique=False)

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=True),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("spacing_mm_x", sa.Float(), nullable=True),
        sa.Column("spacing_mm_y", sa.Float(), nullable=True),
        sa.Column("spacing_source", sa.String(length=32), nullable=True),
        sa.Column("region_x0", sa.Integer(), nullable=True),
        sa.Column("region_y0", sa.Integer(), nullable=True),
        sa.Column("region_x1", sa.Integer(), nullable=True),
        sa.Column("region_y1", sa.Integer(), nullable=True),
        sa.Column("center_x_mm", sa.Float(), nullable=True),
        sa.Column("center_y_mm", sa.Float(), nullable=True),
        sa.Column("semi_axis_a_mm", sa.Float(), nullable=True),
        sa.Column("semi_axis_b_mm", sa.Float(), nullable=True),
        sa.Column("angle_rad", sa.Float(), nullable=True),
        sa.Column("hc_mm", sa.Float(), nullable=True),
        sa.Column("bpd_mm", sa.Float(), nullable=True),
        sa.Column("ofd_mm", sa.Float(), nullable=True),
        sa.Column("quality", sa.Float(), nullable=True),
        sa.Column("hc_tta_spread_mm", sa.Float(), nullable=True),
        sa.Column("flags", sa.String(length=256), nullable=True),
        sa.Column("ga_days", sa.Float(), nullable=True),
        sa.Column("ga_source", sa.String(length=16), nullable=True),
        sa.Column("ga_estimate_days", sa.Float(), nullable=True),
        sa.Column("ga_formula", sa.String(length=32), nullable=True),
        sa.Column("hc_z_score", sa.Float(), nullable=True),
        sa.Column("hc_centile", sa.Float(), nullable=True),
        sa.Column("growth_standard", sa.String(length=32), nullable=True),
        sa.Column("growth_flags", sa.String(length=128), nullable=True),
        sa.Column("centile_reason", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("read_ms", sa.Float(), nullable=True),
        sa.Column("infer_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid", "frame", "model_version", name="uq_measurement_instance_frame_model"),
    )
    op.create_index("ix_measurements_patient_date", "measurements", ["patient_id", "study_date"], unique=False)
    op.create_index("ix_measurements_status", "measurements", ["status"], unique=False)
    op.create_index("ix_measurements_study_instance_uid", "measurements", ["study_instance_uid"], unique=False)


def downgrade() -> None:
    op.drop_table("measurements")  # drops its indexes too
    op.drop_table("jobs")
