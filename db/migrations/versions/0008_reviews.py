"""People's reviews of measurements: the ``reviews`` table (every decision kept) and the latest one on each row.

``reviews``: one row per decision (who, when, accepted | rejected_not_head | rejected_unusable | corrected,
the corrected ellipse and HC/BPD/OFD in mm, the growth facts computed for them, a note), with the reviewed
measurement's key copied so that the decision outlives a replaced row. ``measurements`` gains the latest
decision, its reviewer and time, and the reviewed HC/BPD/OFD, GA estimate, z-score and centile: nullable,
NULL for every row stored before (nobody has reviewed them). ADD COLUMN rewrites nothing on PostgreSQL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REVIEWED = ("reviewed_hc_mm", "reviewed_bpd_mm", "reviewed_ofd_mm", "reviewed_ga_estimate_days",
             "reviewed_hc_z_score", "reviewed_hc_centile")


def upgrade() -> None:
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.add_column(sa.Column("review_decision", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        for name in _REVIEWED:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("measurement_id", sa.Integer(), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(length=24), nullable=False),
        sa.Column("center_x_mm", sa.Float(), nullable=True),
        sa.Column("center_y_mm", sa.Float(), nullable=True),
        sa.Column("semi_axis_a_mm", sa.Float(), nullable=True),
        sa.Column("semi_axis_b_mm", sa.Float(), nullable=True),
        sa.Column("angle_rad", sa.Float(), nullable=True),
        sa.Column("hc_mm", sa.Float(), nullable=True),
        sa.Column("bpd_mm", sa.Float(), nullable=True),
        sa.Column("ofd_mm", sa.Float(), nullable=True),
        sa.Column("ga_estimate_days", sa.Float(), nullable=True),
        sa.Column("hc_z_score", sa.Float(), nullable=True),
        sa.Column("hc_centile", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint("decision IN ('accepted', 'rejected_not_head', 'rejected_unusable', 'corrected')",
                           name="ck_reviews_decision"),
        sa.ForeignKeyConstraint(["measurement_id"], ["measurements.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_measurement", "reviews", ["measurement_id", "id"], unique=False)
    op.create_index("ix_reviews_decided_at", "reviews", ["decided_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reviews_decided_at", table_name="reviews")
    op.drop_index("ix_reviews_measurement", table_name="reviews")
    op.drop_table("reviews")
    with op.batch_alter_table("measurements") as batch_op:
        for name in reversed(_REVIEWED):
            batch_op.drop_column(name)
        batch_op.drop_column("reviewed_at")
        batch_op.drop_column("reviewed_by")
        batch_op.drop_column("review_decision")
