"""model lineage and origin, run precision and liveness, gallery thumbnails

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 22:00:00

- model: ``tag`` (a user's name for a model), ``origin`` (where its weights come from in kind:
  ``moco-v3``, ``dcls-finetune``, ``gc-consistency``, ``ca-stream``, ...), ``parent_id`` (the model it
  was trained from), ``lineage`` (JSON: method, data fingerprint, steps, hyper-parameters, final
  loss/top-1, ...), ``ca_stream`` (the model carries a CA-Stream), ``request`` (JSON of the
  ModelRequest that loads it again). Existing models get NULL/false: nothing is known of their lineage.
- run: ``precision`` (fp32 | bf16 | fp16; every existing run was computed in fp32), and the process
  that last wrote it (``pid``, ``host``, ``heartbeat_at``), so a run whose process is gone can be shown
  as interrupted rather than running.
- thumbnail: small 8-bit PNG maps per run and image for the HTML report's galleries, with the value
  range they were quantised from (a shared colour scale is rebuilt from it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: batch mode would rebuild `model` and `run` (copy, drop,
    # rename), and with foreign keys on SQLite refuses to drop a table that other rows reference.
    op.add_column("model", sa.Column("tag", sa.String(), nullable=True))
    op.add_column("model", sa.Column("origin", sa.String(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its REFERENCES clause in one ALTER (alembic would ALTER the
        # constraint separately, which SQLite cannot do)
        op.execute("ALTER TABLE model ADD COLUMN parent_id INTEGER REFERENCES model (id)")
    else:
        op.add_column("model", sa.Column("parent_id", sa.Integer(), nullable=True))
        op.create_foreign_key("fk_model_parent_id_model", "model", "model", ["parent_id"], ["id"])
    op.add_column("model", sa.Column("lineage", sa.String(), nullable=True))
    op.add_column("model", sa.Column("ca_stream", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("model", sa.Column("request", sa.String(), nullable=True))
    op.create_index(op.f("ix_model_tag"), "model", ["tag"], unique=False)

    op.add_column("run", sa.Column("precision", sa.String(), nullable=False, server_default="fp32"))
    op.add_column("run", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("run", sa.Column("host", sa.String(), nullable=True))
    op.add_column("run", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "thumbnail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=True),
        sa.Column("vmax", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "image_id", "kind", name="uq_thumbnail_run_image_kind"),
    )


def downgrade() -> None:
    op.drop_table("thumbnail")
    if op.get_bind().dialect.name == "sqlite":
        _downgrade_sqlite()
        return
    with op.batch_alter_table("run", schema=None) as batch_op:
        for column in ("heartbeat_at", "host", "pid", "precision"):
            batch_op.drop_column(column)
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_constraint("fk_model_parent_id_model", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_model_tag"))
        for column in ("request", "ca_stream", "lineage", "parent_id", "origin", "tag"):
            batch_op.drop_column(column)


# 0002's model columns, in their order (0001 created them; 0002 left the table alone)
_MODEL_0002 = (
    "id",
    "name",
    "family",
    "dcls",
    "recipe",
    "init",
    "weights_source",
    "weights_fingerprint",
    "checkpoint_sha256",
    "param_count",
    "created_at",
)


def _downgrade_sqlite() -> None:
    """SQLite drops plain columns in place (≥ 3.35), but not ``model.parent_id``, which holds a
    foreign key: ``model`` is rebuilt. Batch mode's rebuild (copy, drop, rename) fails at COMMIT with
    foreign keys on: dropping ``model`` orphans every run's reference, and a rename does not count as
    the parent rows coming back. So the rows are set aside, ``model`` is dropped and created again
    under its own name, and the rows inserted into it settle each deferred reference
    (``PRAGMA foreign_keys`` cannot be switched off inside the migration's transaction)."""
    for column in ("heartbeat_at", "host", "pid", "precision"):
        op.drop_column("run", column)
    kept = ", ".join(_MODEL_0002)
    op.execute("PRAGMA defer_foreign_keys = ON")  # checked at COMMIT, when every model row is back
    op.execute(f"CREATE TEMP TABLE model_0002 AS SELECT {kept} FROM model")
    op.drop_index("ix_model_tag", table_name="model")
    op.drop_table("model")
    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=True),
        sa.Column("dcls", sa.Boolean(), nullable=False),
        sa.Column("recipe", sa.String(), nullable=True),
        sa.Column("init", sa.String(), nullable=True),
        sa.Column("weights_source", sa.String(), nullable=False),
        sa.Column("weights_fingerprint", sa.String(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(), nullable=True),
        sa.Column("param_count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("weights_fingerprint", name="uq_model_fingerprint"),
    )
    op.create_index("ix_model_name", "model", ["name"], unique=False)
    op.execute(f"INSERT INTO model ({kept}) SELECT {kept} FROM model_0002")
    op.execute("DROP TABLE model_0002")
