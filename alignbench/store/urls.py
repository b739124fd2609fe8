"""Where a store is and where its migrations are: the URL helpers every store module may import (a leaf).

A store is named by a SQLAlchemy URL (``sqlite:///results.db``, ``postgresql://me@host/db``) or by a
plain file path (``results.db``, ``/data/all.db``), which is a SQLite store, as sqlite-utils and
datasette take them: ``--db``, ``$ALIGNBENCH_DB`` and ``merge SRC... --into DST`` all go through
``resolve_url``. Messages about a store name where it came from (``--db`` or ``ALIGNBENCH_DB``).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url

import alignbench.migrations

DEFAULT_URL = "sqlite:///alignbench.db"
ENV_VAR = "ALIGNBENCH_DB"


def migrations_dir() -> Path:
    """migrations/ of the source tree, installed as the package alignbench.migrations (pyproject)."""
    return Path(alignbench.migrations.__file__).resolve().parent


def as_url(store: str) -> str:
    """``store`` as a URL: a URL stays as it is, anything without ``://`` is a SQLite file path."""
    if "://" in store:
        return store
    if store == ":memory:":
        return "sqlite://"
    return URL.create("sqlite", database=str(Path(store).expanduser())).render_as_string(hide_password=False)


def resolve_url(url: str | None = None) -> str:
    """``--db`` if given, else ``$ALIGNBENCH_DB``, else ``sqlite:///alignbench.db`` (working directory);
    a plain path is a SQLite store (``as_url``)."""
    return as_url(url or os.environ.get(ENV_VAR) or DEFAULT_URL)


def from_environment(url: str) -> bool:
    """Whether the store ``url`` is the one ``$ALIGNBENCH_DB`` names (no ``--db`` was given for it)."""
    env = os.environ.get(ENV_VAR)
    return bool(env) and as_url(env) == url


def store_option(url: str) -> str:
    """How the user named the store ``url``, for messages: ``ALIGNBENCH_DB=...`` or ``--db ...``."""
    shown = shown_url(url)
    return f"{ENV_VAR}={os.environ[ENV_VAR]!r}" if from_environment(url) else f"--db {shown!r}"


def another_store(url: str) -> str:
    """What to do instead, as the end of a message: pass another ``--db`` (or set the variable)."""
    return f"set {ENV_VAR} to another store or pass --db" if from_environment(url) else "pass another --db"


def shown_url(url: str) -> str:
    """The URL as messages print it: a password is never shown."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL that does not parse is reported by the engine, not here
        return url


display_url = shown_url  # the engine's name for it
