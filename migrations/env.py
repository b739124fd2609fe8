"""Alembic environment: targets SQLModel.metadata of alignbench.store.tables.

alignbench applies these migrations itself when it opens a store (alignbench.store.migrate), passing
its connection in ``config.attributes["connection"]``; the alembic command line (alembic.ini) works
too and uses $ALIGNBENCH_DB or the ini's URL.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import alignbench.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from alignbench.store.engine import create_store_engine, resolve_url

    engine = create_store_engine(resolve_url(config.get_main_option("sqlalchemy.url") or None))
    with engine.begin() as connection:
        _run(connection)
