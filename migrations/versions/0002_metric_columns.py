"""per-image columns for the localisation and faithfulness metrics

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Nullable floats: NULL means the metric was not requested by the run, or undefined for the image
# (the row's skip_reason says which); existing rows keep every value they had.
COLUMNS = (
    "pointing_game",
    "stochastic_pointing_game",
    "energy_in_box",
    "deletion",
    "insertion",
    "average_drop",
    "average_increase",
    "average_gain",
)


def upgrade() -> None:
    with op.batch_alter_table("image_score", schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.add_column(sa.Column(column, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_score", schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
