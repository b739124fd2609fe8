"""Any two variants compared: trained DCLS models as rows of their own, --against parent, --runs A B, and
the "identical" verdict — from made-up stores whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from alignbench.analysis.compare import compare
from alignbench.cli.app import app
from alignbench.errors import AlignbenchError
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.testing.synthetic import add_run, model_identity

CEILING = 0.65753
runner = CliRunner()
OLD_KEYS = (
    "model",
    "dataset",
    "explainer",
    "explainer_params",
    "protocol",
    "metric",
    "scale",
    "baseline",
    "dcls",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "n_pairs",
    "verdict",
    "baseline_run_id",
    "dcls_run_id",
    "baseline_n_scored",
    "dcls_n_scored",
    "centre_bias",
    "centre_bias_n",
    "centre_bias_run_id",
    "notes",
)


def _mark_trained(store, *, child: tuple[str, bool, str], parent: tuple[str, bool, str], tag: str, origin: str) -> None:
    """Give the synthetic model ``child`` (name, dcls, checkpoint) a parent, an origin and a tag, as train records them."""
    with store.session(write=True) as session:
        parent_row = q.find_model(session, model_identity(parent[0], dcls=parent[1], checkpoint=parent[2]).fingerprint)
        identity = model_identity(child[0], dcls=child[1], checkpoint=child[2])
        row = q.record_trained_model(session, identity, origin=origin, parent=parent_row, lineage={"method": origin, "steps": 5})
        row.tag = tag
        session.add(row)
        session.commit()


@pytest.fixture
def lineage_store(tmp_path: Path):
    """resnet50 dense (run 1) and DCLS (run 2); r50-pos trained from the DCLS model (run 3, images 5..44);
    r50-ft trained from the dense model (run 4); centre bias (run 5); r50-pos with gradcam (run 6),
    whose parent has no gradcam run."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    rng = np.random.default_rng(7)
    base = rng.uniform(-0.2, 0.8, 50)
    values = {
        "dense": base,
        "dcls": base + rng.normal(0, 1e-8, 50),  # from-dense: the dense function up to rounding
        "pos": base + 0.05 + rng.normal(0, 0.05, 50),
        "ft": base - 0.02 + rng.normal(0, 0.05, 50),
    }
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=values["dense"])
        add_run(store, model="resnet50", dcls=True, values=values["dcls"])
        add_run(store, model="resnet50", dcls=True, values=values["pos"][5:45], indices=range(5, 45), checkpoint="pos", dataset_size=50)
        add_run(store, model="resnet50", dcls=False, values=values["ft"], checkpoint="ft")
        add_run(
            store,
            model="centre-bias",
            dcls=False,
            values=np.linspace(0, 0.5, 50),
            method="centre-bias",
            params={"sigma_frac": 0.25},
            family="reference",
        )
        add_run(store, model="resnet50", dcls=True, values=values["pos"], checkpoint="pos", method="gradcam")
        _mark_trained(store, child=("resnet50", True, "pos"), parent=("resnet50", True, ""), tag="r50-pos", origin="dcls-finetune")
        _mark_trained(store, child=("resnet50", False, "ft"), parent=("resnet50", False, ""), tag="r50-ft", origin="finetune")
    return url, values


def test_against_parent_pairs_each_trained_model_with_its_parents_run(lineage_store) -> None:
    url, values = lineage_store
    result = compare(url, against="parent")
    assert result.kind == "against-parent"
    rows = {(row.variant, row.explainer): row for row in result.comparisons}
    pos = rows[("r50-pos", "threshold-gradcam")]
    assert (pos.baseline_run_id, pos.dcls_run_id) == (2, 3) and pos.kind == "against-parent"
    common = slice(5, 45)  # the images both runs scored
    d = values["pos"][common] - values["dcls"][common]
    assert pos.n_pairs == 40
    # float64 rounding of n-term sums (n: the sample size), and of the p-value's series/normal approximation
    assert pos.delta == pytest.approx(d.mean() / CEILING, rel=1e-9)
    assert pos.p_value == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-9)
    assert pos.verdict == "better" and pos.ci_low > 0
    ft = rows[("r50-ft", "threshold-gradcam")]
    assert (ft.baseline_run_id, ft.dcls_run_id) == (1, 4)
    lonely = rows[("r50-pos", "gradcam")]
    assert lonely.verdict == "missing parent run" and lonely.baseline is None and lonely.dcls_run_id == 6
    assert any("score the parent" in note for note in lonely.notes)


def test_dcls_vs_baseline_shows_each_trained_dcls_variant_by_its_tag(lineage_store) -> None:
    url, _ = lineage_store
    rows = {row.variant: row for row in compare(url, explainer="threshold-gradcam").comparisons}
    assert set(rows) == {None, "r50-pos"}  # the trained dense model is compared with its parent, not here
    assert (rows[None].baseline_run_id, rows[None].dcls_run_id) == (1, 2)
    assert (rows["r50-pos"].baseline_run_id, rows["r50-pos"].dcls_run_id) == (1, 3)
    assert rows["r50-pos"].kind == "dcls-vs-baseline" and rows["r50-pos"].dcls_label.endswith("· r50-pos")


def test_identical_runs_get_no_p_value(lineage_store) -> None:
    url, _ = lineage_store
    plain = {row.variant: row for row in compare(url, explainer="threshold-gradcam").comparisons}[None]
    assert plain.verdict == "identical" and plain.p_value is None
    # not rounding: the fixture's N(0, 1e-8) noise, whose mean over 50 images is ~1.4e-9 (/ the ceiling); 1e-7 is tens of SDs
    assert abs(plain.delta) < 1e-7
    table = runner.invoke(app, ["compare", "--db", url, "--explainer", "threshold-gradcam"])
    assert table.exit_code == 0, table.output
    assert "identical" in table.stdout and "resnet50 · r50-pos" in table.stdout and "identical on 1" in table.stdout


def test_any_two_runs(lineage_store) -> None:
    url, values = lineage_store
    result = compare(url, run_pair=(4, 3))
    (row,) = result.comparisons
    assert result.kind == "runs" and (row.baseline_run_id, row.dcls_run_id) == (4, 3) and row.n_pairs == 40
    d = values["pos"][5:45] - values["ft"][5:45]
    assert row.delta == pytest.approx(d.mean() / CEILING, rel=1e-9)  # float64 rounding of n-term sums (n: the sample size)
    assert row.centre_bias_run_id == 5
    across = compare(url, run_pair=(2, 6)).comparisons[0]  # two explainer settings of one dataset: allowed, said
    assert any("gradcam" in note for note in across.notes)
    with pytest.raises(AlignbenchError, match="no stored run 99"):
        compare(url, run_pair=(1, 99))


def test_json_keeps_every_key_and_adds_the_sides(lineage_store) -> None:
    url, _ = lineage_store
    for args in (["--against", "parent"], ["--runs", "1", "3"], []):
        result = runner.invoke(app, ["compare", "--db", url, "--json", *args])
        assert result.exit_code == 0, result.output
        for row in json.loads(result.stdout):
            assert set(OLD_KEYS) <= set(row) and {"kind", "variant", "baseline_label", "dcls_label"} <= set(row)


def test_runs_from_two_datasets_and_bad_options_are_one_line(tmp_path: Path, lineage_store) -> None:
    url, _ = lineage_store
    with open_store(url) as store:
        other = add_run(store, model="resnet50", dcls=False, values=[0.1] * 12, dataset="sample", dataset_fingerprint="s1")
    two_datasets = runner.invoke(app, ["compare", "--db", url, "--runs", "1", str(other)])
    assert two_datasets.exit_code == 2 and "different datasets" in two_datasets.stderr
    assert len(two_datasets.stderr.strip().splitlines()) == 1
    both = runner.invoke(app, ["compare", "--db", url, "--runs", "1", "3", "--against", "parent"])
    assert both.exit_code == 2 and "--runs A B names the two runs itself" in both.stderr
    unknown = runner.invoke(app, ["compare", "--db", url, "--against", "grandparent"])
    assert unknown.exit_code == 2 and "unknown --against" in unknown.stderr


def test_against_parent_without_trained_models_says_what_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2])
    result = runner.invoke(app, ["compare", "--db", url, "--against", "parent"])
    assert result.exit_code == 1 and "alignbench train" in result.stderr


@pytest.mark.parametrize(
    ("metric", "column", "span"),
    [("spearman", "spearman", 2.0), ("average-drop", "average_drop", 100.0), ("deletion", "deletion", 1.0)],
)
def test_identical_is_relative_to_the_metrics_range(tmp_path: Path, metric: str, column: str, span: float) -> None:
    """The probe: a from-dense DCLS model on average drop (a percentage), per-image differences ~1e-4 of
    rounding, was "no significant difference (p = 0.10)" under a 1e-6 absolute threshold."""
    from alignbench.analysis.compare import IDENTICAL_RELATIVE

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 40) * span
    url = f"sqlite:///{tmp_path / f'{column}.db'}"
    rounding = rng.uniform(-0.5, 0.5, 40) * IDENTICAL_RELATIVE * span  # within the bound, both signs
    real = np.full(40, 50 * IDENTICAL_RELATIVE * span)  # a shift 50 times the bound on every image: not rounding
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=base, metrics=(metric,), column=column)
        add_run(store, model="resnet50", dcls=True, values=base + rounding, metrics=(metric,), column=column)
        add_run(store, model="convnext_tiny", dcls=False, values=base, metrics=(metric,), column=column)
        add_run(store, model="convnext_tiny", dcls=True, values=base + real, metrics=(metric,), column=column)
    rows = {row.model: row for row in compare(url, metric=metric).comparisons}
    assert rows["resnet50"].verdict == "identical" and rows["resnet50"].p_value is None
    assert rows["convnext_tiny"].verdict != "identical" and rows["convnext_tiny"].p_value is not None
