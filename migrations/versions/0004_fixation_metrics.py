"""per-image columns for the saliency benchmark's fixation metrics

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 06:10:00

NSS, AUC-Judd, AUC-Borji, shuffled AUC, CC, KL, SIM and information gain (MIT/Tübingen saliency
benchmark; ``alignbench.metrics.fixation``). Nullable floats, as 0002's: NULL means the metric was not
requested by the run, or undefined for the image (the row's skip_reason says which).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("nss", "auc_judd", "auc_borji", "sauc", "cc", "kl", "sim", "ig")


def upgrade() -> None:
    # Plain ADD COLUMN (as 0003): batch mode would copy the whole image_score table on SQLite.
    for column in COLUMNS:
        op.add_column("image_score", sa.Column(column, sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite ≥ 3.35 drops a plain column in place; batch mode would rebuild image_score.
    for column in reversed(COLUMNS):
        op.drop_column("image_score", column)
