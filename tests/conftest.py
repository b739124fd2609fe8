from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real images and boxes that ship beside the repository (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data missing: {SHARED_DATA} (the repository's sibling shared/data)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never read or write the user's cache or store: both live in a session temp dir."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("ALIGNBENCH_DB", f"sqlite:///{tmp_path_factory.mktemp('store') / 'alignbench.db'}")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (temp data dir, 127.0.0.1 only, a free port), stopped at the end."""
    from alignbench.testing.postgres import LocalPostgres, server_bindir

    if server_bindir() is None:
        pytest.skip("PostgreSQL server binaries missing; scripts/system_packages.sh (make test) installs them")
    pytest.importorskip("psycopg", reason="psycopg missing; pip install -e '.[dev]'")
    server = LocalPostgres.start()
    yield server
    server.stop()


_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty database on the session's server."""
    return postgres_server.create_database(f"test_{os.getpid()}_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")
