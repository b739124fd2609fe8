"""model_tag: a tag names one model, a model may carry several

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 06:05:00

Until 0004 a tag was the column ``model.tag``: training other weights under a used tag stored a
second model with it (``score --trained`` then took the newest), and recording a model under a new
tag renamed it. ``model_tag`` holds each tag once. Existing tags are carried over; a tag that
several models carried goes to the newest of them — the one ``score --trained TAG`` resolved to.
``model.tag`` is kept as each model's first name (what listings show).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_tag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tag", name="uq_model_tag_tag"),
    )
    op.create_index(op.f("ix_model_tag_model_id"), "model_tag", ["model_id"], unique=False)
    op.execute(
        "INSERT INTO model_tag (tag, model_id, created_at) "
        "SELECT model.tag, model.id, model.created_at FROM model "
        "WHERE model.tag IS NOT NULL AND model.id = (SELECT MAX(other.id) FROM model AS other WHERE other.tag = model.tag)"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_model_tag_model_id"), table_name="model_tag")
    op.drop_table("model_tag")
