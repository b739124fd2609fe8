"""Where a store is and where its migrations are: the URL helpers every store module may import (a leaf)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

import alignbench.migrations

DEFAULT_URL = "sqlite:///alignbench.db"


def migrations_dir() -> Path:
    """migrations/ of the source tree, installed as the package alignbench.migrations (pyproject)."""
    return Path(alignbench.migrations.__file__).resolve().parent


def resolve_url(url: str | None = None) -> str:
    """``--db`` if given, else ``$ALIGNBENCH_DB``, else ``sqlite:///alignbench.db`` (working directory)."""
    return url or os.environ.get("ALIGNBENCH_DB") or DEFAULT_URL


def shown_url(url: str) -> str:
    """The URL as messages print it: a password is never shown."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL that does not parse is reported by the engine, not here
        return url


display_url = shown_url  # the engine's name for it
