"""Helpers shared by the tests/test_reliability_*.py files (issue 11): one-line errors, stores
with known runs, byte comparisons."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from alignbench.cli.app import app
from alignbench.store import open_store
from alignbench.store import queries as q


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line_error(result, *fragments: str, exit_code: int = 2) -> str:
    """Assert the command failed with ``exit_code``, one line on stderr holding every fragment, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def dump(path: Path) -> list[str]:
    """Every table and row of the SQLite file at ``path`` as SQL text: equal dumps, equal stores."""
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def no_runs(path: Path) -> bool:
    """Nothing was stored at ``path``: no store, or a store without a run or a row."""
    if not Path(path).exists():
        return True
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT (SELECT count(*) FROM run) + (SELECT count(*) FROM image_score)").fetchone() == (0,)
    finally:
        con.close()


def plain_file(path: Path) -> None:
    """Checkpoint the WAL and go back to a rollback journal: the store is then one file whose bytes
    show any change."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()


def sample_run_key(explainer: str = "threshold-gradcam", model: str = "efficientnet_lite0") -> tuple[str, int, str]:
    """(run key, images, dataset fingerprint) `alignbench score MODEL` gives the sample dataset."""
    from alignbench.datasets import open_dataset
    from alignbench.explainers import explainer_setting
    from alignbench.models import model_identity

    method, params = explainer_setting(explainer)
    dataset = open_dataset("sample")
    key = q.run_key(model_identity(model).fingerprint, method, params, dataset.fingerprint, "aligned", ["spearman"])
    return key, len(dataset), dataset.fingerprint


class _Identity:
    def __init__(self, name: str, fingerprint: str) -> None:
        self.name, self.fingerprint = name, fingerprint
        self.dcls, self.recipe, self.init, self.weights_source, self.checkpoint_sha256 = False, None, None, "test", None


def add_run(
    url: str,
    *,
    key: str,
    n_images: int,
    n_rows: int,
    model: str = "efficientnet_lite0",
    dataset: str = "sample",
    dataset_fingerprint: str = "d" * 64,
    location: str | None = None,
    status: str = "complete",
    method: str = "threshold-gradcam",
    params: dict | None = None,
) -> int:
    """A run with ``n_rows`` rows (spearman i / n) stored through the named queries; returns its id."""
    params = {"threshold": 0.3} if params is None and method == "threshold-gradcam" else (params or {})
    with open_store(url) as store, store.session(write=True) as session:
        model_row = q.upsert_model(session, _Identity(model, f"weights-of-{model}"), param_count=1000, family="test")
        explainer = q.upsert_explainer(session, method, params)
        dataset_row = q.upsert_dataset(session, dataset, dataset_fingerprint, n_images, location=location)
        run = q.get_or_create_run(
            session,
            key=key,
            model=model_row,
            explainer=explainer,
            dataset=dataset_row,
            protocol="aligned",
            metrics=["spearman"],
            n_images=n_images,
        )
        q.insert_scores(
            session, run.id, [{"image_index": i, "image_id": f"img{i}", "spearman": i / max(1, n_images)} for i in range(n_rows)]
        )
        q.update_run(session, run, status=status)
        session.commit()
        return run.id
