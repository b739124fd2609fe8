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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


# Markers (registered in pyproject.toml; `make test-fast` deselects all four). `postgres` follows the
# fixtures, so a new test that asks for the server is marked by itself; the others are named here
# (tests/<path> → test functions, every parametrisation), since nothing a test declares tells them.
_POSTGRES_FIXTURES = {"postgres_server", "postgres_url"}
MARKED_BY_NAME: dict[str, dict[str, set[str]]] = {
    # launches torchrun (several processes)
    "ddp": {
        "scoring/test_distributed.py": {
            "test_two_cpu_processes_store_exactly_the_rows_of_one",
            "test_a_rank_that_dies_leaves_the_run_resumable",
            "test_a_study_under_torchrun_stores_every_run_and_prints_once",
        },
        "training/test_train_ddp.py": {"test_two_processes_follow_the_one_process_loss_curve"},
    },
    # opens headless Chromium (alignbench.testing.browser)
    "browser": {
        "html_report/test_html_report_browser.py": {"test_report_in_a_real_browser"},
    },
    # the slow tail of `pytest --durations` on the whole suite (2-core CPU machine)
    "slow": {
    },
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    for marker, files in MARKED_BY_NAME.items():
        for file in files:
            if not (tests / file).is_file():
                raise pytest.UsageError(f"tests/conftest.py marks {marker} in tests/{file}, which does not exist")
    checked: set[str] = set()
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
        path = item.path.resolve()
        if not path.is_relative_to(tests):
            continue
        file, function = path.relative_to(tests).as_posix(), getattr(item, "originalname", item.name)
        for marker, files in MARKED_BY_NAME.items():
            names = files.get(file, set())
            if file not in checked:  # a renamed test would silently lose its marker: say so instead
                missing = sorted(name for name in names if not hasattr(getattr(item, "module", None), name))
                if missing:
                    raise pytest.UsageError(f"tests/conftest.py marks {marker} on {missing} in tests/{file}, which has no such test")
            if function in names:
                item.add_marker(getattr(pytest.mark, marker))
        checked.add(file)
