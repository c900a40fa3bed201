"""A standard-plane label on every frame read: ``measurements.plane_label``, ``plane_probability`` and
``plane_probabilities`` (issue 19).

SonoNet-16's most probable class (``3vv`` ... ``spine_sagittal``, ``models.plane.sononet.PlaneClass``), its
probability, and all 14 probabilities as a JSON object, on every row whose frame was read (``not_head`` and
``failed`` rows included) when ``FETALHC_PLANE_CLASSIFIER`` names the classifier's file; NULL without it
(never guessed) and on every row stored before. Rows by plane are listed in study-date order, as by status
(migration 0007): the index (plane_label, study_date, id). Nullable columns: ADD COLUMN rewrites nothing on
PostgreSQL; building the index locks writes to ``measurements`` for its build (seconds per million rows).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.add_column(sa.Column("plane_label", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("plane_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("plane_probabilities", sa.JSON(), nullable=True))
        batch_op.create_index("ix_measurements_plane_date", ["plane_label", "study_date", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("measurements") as batch_op:
        batch_op.drop_index("ix_measurements_plane_date")
        batch_op.drop_column("plane_probabilities")
        batch_op.drop_column("plane_probability")
        batch_op.drop_column("plane_label")
