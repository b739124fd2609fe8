from __future__ import annotations

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
