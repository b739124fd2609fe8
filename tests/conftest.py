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
# (tests/<path> → test functions: every parametrisation, or one as `name[id]`), since nothing a test
# declares tells them.
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
    # The slow tail of `pytest --durations=60` over the whole suite (2-core CPU machine shared with
    # others, load average ~8): the tests over ~2.5 s there, but for the import guards (a subprocess
    # is their only way to look) and first-in-session costs that move to whichever test runs first.
    "slow": {
        "cli/test_models_command.py": {"test_models_json_lists_every_registry_entry"},
        "datasets/test_datasets.py": {"test_imagenet_val_reads_wsolevaluation_boxes_equal_to_the_sample"},
        "datasets/test_fixations.py": {"test_an_image_without_fixations_is_scored_as_undefined"},
        "explainers/test_cam_core.py": {"test_no_hooks_graphs_or_tensors_left_behind"},
        "html_report/test_html_report.py": {"test_output_directory_rules"},
        "html_report/test_html_report_browser.py": {  # the module's store: two scored runs of a tiny model
            "test_gallery_maps_are_the_runs_maps",
            "test_second_report_reuses_the_maps_without_torch",
            "test_a_run_whose_model_cannot_be_loaded_is_named_in_its_gallery",
        },
        "models/test_ca_stream.py": {"test_score_cli_with_a_stream_is_stored_and_cached"},
        "models/test_checkpoints.py": {"test_cached_published_convnext_checkpoint_loads_offline"},
        "models/test_dcls.py": {"test_forward_features_is_nchw_and_unchanged_in_size_by_dcls[fastvit_sa36]"},
        "models/test_equivalence.py": {"test_efficientnet_lite0_from_dense_keeps_every_top1"},
        "models/test_moco_v3.py": {"test_moco_v3_weights_get_moco_v3s_eval_transform"},
        "scoring/test_run_status.py": {"test_a_killed_run_is_interrupted_not_running_and_resumes"},
        "scoring/test_score.py": {
            "test_deletion_steps_are_part_of_the_run",
            "test_killed_run_resumes_with_one_row_per_image",
            "test_workers_started_before_the_model_loads_serve_only_the_missing_images",
            "test_embedded_default_scores_then_answers_from_the_store",
            "test_limit_force_and_threshold_are_separate_runs",
            "test_scores_do_not_depend_on_the_number_of_workers",
        },
        "scoring/test_study.py": {
            "test_score_with_several_models_is_a_study_in_one_line",
            "test_study_run_computes_what_is_missing_then_compares",
        },
        "store/test_merge.py": {"test_conflicting_rows_are_listed_and_kept_unless_prefer_newer"},
        "store/test_store.py": {"test_two_processes_write_one_store"},
        "training/test_train.py": {
            "test_resume_reaches_exactly_the_uninterrupted_state",
            "test_kill_9_while_a_checkpoint_is_written_leaves_the_previous_one_whole",
        },
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
                missing = sorted(name for name in names if not hasattr(getattr(item, "module", None), name.split("[")[0]))
                if missing:
                    raise pytest.UsageError(f"tests/conftest.py marks {marker} on {missing} in tests/{file}, which has no such test")
            if function in names or item.name in names:
                item.add_marker(getattr(pytest.mark, marker))
        checked.add(file)
