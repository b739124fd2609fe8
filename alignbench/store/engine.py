"""Opening a results store from a URL: engine, SQLite pragmas, migrations, clear errors.

SQLite (the default) is opened with a busy timeout and foreign keys on, and switched to WAL mode by
the commands that write (after the file was checked to be a store), so several processes can score
into one file at once; transactions are begun explicitly so that DDL and writes
are atomic (pysqlite's own implicit BEGIN would leave half a migration behind on failure).
PostgreSQL (a team's shared store) goes through psycopg 3 (``pip install 'alignbench[postgres]'``):
``postgresql://`` means ``postgresql+psycopg://`` when psycopg is installed. Any other SQLAlchemy URL
works as it is.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from alignbench.errors import StoreError
from alignbench.store._check import check_state, outdated, read_state
from alignbench.store.migrate import upgrade_to_head
from alignbench.store.urls import DEFAULT_URL, display_url, migrations_dir, resolve_url, shown_url

if TYPE_CHECKING:  # pragma: no cover
    from sqlmodel import Session

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_URL",
    "SQLITE_BUSY_TIMEOUT_S",
    "Store",
    "StoreMissing",
    "create_store_engine",
    "display_url",
    "migrations_dir",
    "open_store",
    "resolve_url",
]
SQLITE_BUSY_TIMEOUT_S = 60.0  # a writer waits this long for another process's transaction
# A server that does not answer is reported after this long, not after the OS's TCP timeout (minutes).
CONNECT_TIMEOUT_S = 10


class StoreMissing(StoreError):
    """A read-only command was pointed at a SQLite file that does not exist."""

    exit_code = 0


@dataclass
class Store:
    url: str
    engine: Engine

    def session(self, *, write: bool = False) -> Session:
        """A session; ``write=True`` takes SQLite's write lock at BEGIN (no read-then-upgrade deadlock)."""
        # SQLModel (the ORM, slow to import) only here: reading commands that list runs use Core
        # connections (alignbench.store.listing) and never import it.
        from sqlmodel import Session

        bind = self.engine.execution_options(sqlite_begin="IMMEDIATE") if write else self.engine
        return Session(bind, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse(url: str) -> URL:
    try:
        sa_url = make_url(url)
    except ArgumentError:
        raise StoreError(f"--db {url!r} is not a database URL; use e.g. sqlite:///alignbench.db or postgresql://user@host/dbname") from None
    if sa_url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is not None:
        sa_url = sa_url.set(drivername="postgresql+psycopg")  # SQLAlchemy's default would be psycopg2
    return sa_url


def _server_message(url: str, sa_url: URL, reason: str) -> str:
    """One line for a database server that cannot be reached or refuses us, naming host and port."""
    first = next((line.strip() for line in reason.splitlines() if line.strip()), reason)
    host = sa_url.host or "localhost (unix socket)"
    port = sa_url.port or 5432
    return (
        f"cannot connect to the {sa_url.get_backend_name()} server at {host}:{port} for store {display_url(url)} "
        f"({first}); check that the server runs and accepts you, or pass another --db"
    )


def _check_sqlite_path(url: str, path: str | None, create: bool) -> None:
    if not path or path == ":memory:":
        return
    file = Path(path)
    if file.is_dir():
        raise StoreError(f"store {url}: {file} is a directory; give a file path, e.g. sqlite:///{file / 'alignbench.db'}")
    if file.exists():
        if not os.access(file, os.R_OK | os.W_OK):
            raise StoreError(f"store {url}: {file} is not readable and writable by you; fix its permissions or pass another --db")
        return
    if not create:
        raise StoreMissing(f"no store at {file}; run `alignbench score` first (or pass --db)")
    parent = file.parent if str(file.parent) else Path(".")
    if not parent.is_dir():
        raise StoreError(f"store {url}: directory {parent} does not exist; create it or pass another --db")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"store {url}: directory {parent} is not writable; pass another --db")


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see module docstring)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash loses no committed row
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(engine: Engine) -> None:
    """Switch a SQLite store to WAL (persistent in the file), so readers and writers do not block
    each other. Done only by commands that write, after the file was checked to be a store: the
    switch itself rewrites the file's header."""
    if engine.dialect.name != "sqlite":
        return
    connection = engine.raw_connection()  # autocommit (see _install_sqlite_pragmas): WAL cannot be set in a transaction
    try:
        cursor = connection.cursor()
        # SQLite answers the switch with SQLITE_BUSY at once, without calling the busy handler, while
        # another process holds the file (two writers opening a new store together): retry for as
        # long as the busy timeout would have waited.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        while True:
            try:
                if cursor.execute("PRAGMA journal_mode").fetchone()[0] not in ("wal", "memory"):
                    cursor.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as error:
                if ("locked" not in str(error) and "busy" not in str(error)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cursor.close()
    finally:
        connection.close()


def create_store_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url`` with the SQLite settings above; errors are StoreError with one clear line."""
    sa_url = _parse(url)
    kwargs: dict = {}
    if sa_url.get_backend_name() == "sqlite":
        _check_sqlite_path(url, sa_url.database, create)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        if sa_url.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool  # one connection, so the in-memory database persists
    elif sa_url.get_backend_name() == "postgresql" and "connect_timeout" not in sa_url.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(sa_url, **kwargs)
    except NoSuchModuleError:
        raise StoreError(
            f"--db {display_url(url)!r}: unknown database scheme {sa_url.drivername!r}; use sqlite:///PATH or postgresql://..."
        ) from None
    except ModuleNotFoundError as exc:
        extra = " (pip install 'alignbench[postgres]')" if sa_url.get_backend_name() == "postgresql" else ""
        raise StoreError(f"--db {display_url(url)!r} needs the Python driver {exc.name!r}; pip install it{extra}") from None
    if engine.dialect.name == "sqlite":
        _install_sqlite_pragmas(engine)
    return engine


def open_store(url: str | None = None, *, create: bool = True, migrate: bool = True) -> Store:
    """Open the store at ``url``, checked before anything is written to it.

    ``create``: a missing SQLite file, or a database without any table, becomes a new store; else
    StoreMissing. ``migrate``: a store at an older schema revision is upgraded to the head revision;
    else StoreOutdated, naming ``alignbench upgrade``. With neither (``report``, ``compare``, a cached
    ``score``) nothing is written at all, not even SQLite's journal mode.

    Raises StoreError, with nothing stored changed, for a bad URL, an unwritable or corrupt file, a
    database that is not an alignbench store or is damaged (see ``alignbench.store._check``), or a
    store written by a newer alignbench. Opening a store at the head revision reads its table names
    and revision and never imports alembic.
    """
    url = resolve_url(url)
    engine = create_store_engine(url, create=create)
    try:
        state = read_state(engine)
        check_state(state, url)
        if state.empty and not create:
            raise StoreMissing(f"store {shown_url(url)} is empty; run `alignbench score` first (or pass --db)")
        if create or migrate:
            _use_wal(engine)
        if not state.at_head:
            if not (migrate or state.empty):
                raise outdated(state, url)
            upgrade_to_head(engine, url)
    except StoreError:
        engine.dispose()
        raise
    except (OperationalError, DatabaseError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip() or type(exc).__name__
        if engine.dialect.name != "sqlite" and isinstance(exc, OperationalError):
            raise StoreError(_server_message(url, engine.url, reason)) from None
        reason = " ".join(reason.split())
        raise StoreError(f"cannot open store {display_url(url)}: {reason}; check the path/URL or pass another --db") from None
    return Store(url=url, engine=engine)
