"""Alembic migrations applied when a store is opened; a store from a newer alignbench is refused."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from alignbench.errors import StoreError


def alembic_config() -> Config:
    from alignbench.store.engine import migrations_dir

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine, url: str, *, revision: str = "head") -> None:
    """Upgrade the store to ``revision`` in one transaction; refuse revisions this code does not know."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    target = script.get_current_head() if revision == "head" else revision
    current = current_revision(engine)
    if current == target:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise StoreError(
            f"store {url} was written by a newer alignbench (schema revision {current}, this one knows up to "
            f"{script.get_current_head()}); upgrade alignbench to use it"
        )
    # BEGIN IMMEDIATE on SQLite: concurrent openers of a new store wait for one migration, then see it.
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
