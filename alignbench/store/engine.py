"""Opening a results store from a URL: engine, SQLite pragmas, migrations, clear errors.

SQLite (the default) is opened with a busy timeout and foreign keys on, and switched to WAL mode by
the commands that write (after the file was checked to be a store), so several processes can score
into one file at once; transactions are begun explicitly so that DDL and writes
are atomic (pysqlite's own implicit BEGIN would leave half a migration behind on failure).
Commands that only read open a SQLite store read-only (``open_store_to_read``): ``mode=ro``, so
neither the file nor its journal mode can change and a store the user may only read (chmod 444)
is read; ``immutable=1`` where SQLite could not create the WAL's shared-memory file (a WAL store in a
directory the user cannot write) and no write-ahead log holds rows.
PostgreSQL (a team's shared store) goes through psycopg 3 (``pip install 'alignbench[postgres]'``):
``postgresql://`` means ``postgresql+psycopg://`` when psycopg is installed. Any other SQLAlchemy URL
works as it is.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import time
import urllib.parse
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
from alignbench.store.urls import DEFAULT_URL, another_store, display_url, migrations_dir, resolve_url, shown_url, store_option

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
    "open_store_to_read",
    "resolve_url",
    "store_exists",
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
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreError(
            f"{store_option(url)} is not a database URL or file path; use e.g. alignbench.db, sqlite:///alignbench.db or postgresql://user@host/dbname"
        ) from None
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
        f"({first}); check that the server runs and accepts you, or {another_store(url)}"
    )


def _check_sqlite_path(url: str, path: str | None, create: bool, read_only: bool = False) -> None:
    if not path or path == ":memory:":
        return
    file = Path(path)
    if file.is_dir():
        raise StoreError(f"{store_option(url)} is a directory; give a file path, e.g. {file / 'alignbench.db'}")
    if file.exists():
        if read_only and not os.access(file, os.R_OK):
            raise StoreError(f"store {url}: {file} is not readable by you; fix its permissions or {another_store(url)}")
        if not read_only and not os.access(file, os.R_OK | os.W_OK):
            raise StoreError(f"store {url}: {file} is not readable and writable by you; fix its permissions or {another_store(url)}")
        return
    if not create:
        raise StoreMissing(f"no store at {file}; run `alignbench score` first (or {another_store(url).replace('pass another', 'pass')})")
    parent = file.parent if str(file.parent) else Path(".")
    if not parent.is_dir():
        raise StoreError(f"store {url}: directory {parent} does not exist; create it or {another_store(url)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"store {url}: directory {parent} is not writable; {another_store(url)}")


_SQLITE_HEADER = b"SQLite format 3\x00"


def _read_only_mode(url: str, file: Path) -> dict[str, str]:
    """The URI parameters that open ``file`` for reading only: ``mode=ro``, or ``immutable=1`` for a
    WAL store whose shared-memory file SQLite could neither open nor create (its directory is not
    writable by us) — which is safe only while no write-ahead log holds rows the file lacks."""
    with open(file, "rb") as handle:
        header = handle.read(20)
    wal = header[:16] == _SQLITE_HEADER and len(header) == 20 and header[18] == 2  # read version 2: WAL mode
    shm, log = Path(f"{file}-shm"), Path(f"{file}-wal")
    if not wal or os.access(file.parent, os.W_OK) or shm.exists():
        return {"mode": "ro"}
    if log.exists() and log.stat().st_size > 0:
        raise StoreError(
            f"store {url}: its write-ahead log {log} holds rows that SQLite can only read with a {shm.name} file beside it, "
            f"and {file.parent} is not writable by you; read the store where its directory is writable, or copy it with its -wal file"
        )
    return {"immutable": "1"}


def _read_only_url(url: str, sa_url: URL) -> URL:
    """``sa_url`` as a SQLite URI that opens the file read-only (pysqlite's ``uri=true``)."""
    file = Path(sa_url.database).resolve()
    query = {**_read_only_mode(url, file), "uri": "true"}
    return sa_url.set(database=f"file:{urllib.parse.quote(str(file))}", query=query)


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


def create_store_engine(url: str, *, create: bool = True, read_only: bool = False) -> Engine:
    """An engine for ``url`` with the SQLite settings above; errors are StoreError with one clear line.

    ``read_only``: a SQLite file is opened so that nothing can write to it (see the module docstring)."""
    sa_url = _parse(url)
    kwargs: dict = {}
    if sa_url.get_backend_name() == "sqlite":
        _check_sqlite_path(url, sa_url.database, create and not read_only, read_only)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        if sa_url.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool  # one connection, so the in-memory database persists
        elif read_only and "uri" not in sa_url.query:
            sa_url = _read_only_url(url, sa_url)
    elif sa_url.get_backend_name() == "postgresql" and "connect_timeout" not in sa_url.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(sa_url, **kwargs)
    except NoSuchModuleError:
        raise StoreError(
            f"{store_option(url)}: unknown database scheme {sa_url.drivername!r}; use a file path, sqlite:///PATH or postgresql://..."
        ) from None
    except ModuleNotFoundError as exc:
        extra = " (pip install 'alignbench[postgres]')" if sa_url.get_backend_name() == "postgresql" else ""
        raise StoreError(f"{store_option(url)} needs the Python driver {exc.name!r}; pip install it{extra}") from None
    if engine.dialect.name == "sqlite":
        _install_sqlite_pragmas(engine)
    return engine


def store_exists(url: str | None = None) -> bool:
    """Whether opening ``url`` to write would find a store rather than create one: False for a SQLite
    file that is missing or empty (a server's database is taken to exist). Reads nothing."""
    sa_url = _parse(resolve_url(url))
    if sa_url.get_backend_name() != "sqlite" or sa_url.database in (None, "", ":memory:"):
        return True
    file = Path(sa_url.database)
    return file.is_file() and file.stat().st_size > 0


def open_store_to_read(url: str | None = None) -> Store:
    """The store at ``url`` as every reading command opens it: read-only, never created, migrated or
    switched to WAL. StoreMissing for a missing or empty store, StoreOutdated (naming ``alignbench
    upgrade``) for an older schema, StoreError for anything else that is not a readable store."""
    return open_store(url, create=False, migrate=False)


def open_store(url: str | None = None, *, create: bool = True, migrate: bool = True, read_only: bool | None = None) -> Store:
    """Open the store at ``url``, checked before anything is written to it.

    ``create``: a missing SQLite file, or a database without any table, becomes a new store; else
    StoreMissing. ``migrate``: a store at an older schema revision is upgraded to the head revision;
    else StoreOutdated, naming ``alignbench upgrade``. With neither (``open_store_to_read``: every reading
    command, and a cached ``score``) a SQLite file is opened read-only: nothing is written at all, not
    even SQLite's journal mode. ``read_only=False`` with neither: a store that may be written as it is
    (rows added at its revision, journal mode kept), e.g. the thumbnails ``report --html`` stores.

    Raises StoreError, with nothing stored changed, for a bad URL, an unwritable or corrupt file, a
    database that is not an alignbench store or is damaged (see ``alignbench.store._check``), or a
    store written by a newer alignbench. Opening a store at the head revision reads its table names
    and revision and never imports alembic.
    """
    url = resolve_url(url)
    if read_only is None:
        read_only = not (create or migrate)
    engine = create_store_engine(url, create=create, read_only=read_only)
    try:
        state = read_state(engine)
        check_state(state, url)
        if state.empty and not create:
            raise StoreMissing(
                f"store {shown_url(url)} is empty; run `alignbench score` first (or {another_store(url).replace('pass another', 'pass')})"
            )
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
        raise StoreError(f"cannot open store {display_url(url)}: {reason}; check the path/URL or {another_store(url)}") from None
    return Store(url=url, engine=engine)
