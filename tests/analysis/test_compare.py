"""`alignbench compare`: pairing, statistics against scipy, one-sided and partial data, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from alignbench.analysis.compare import MIN_PAIRS, compare, compare_runs
from alignbench.cli.app import app
from alignbench.errors import AlignbenchError
from alignbench.store import open_store
from alignbench.testing.synthetic import add_run

CEILING = 0.65753
runner = CliRunner()


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 's.db'}"


def _values(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    baseline = rng.uniform(-0.2, 0.8, n)
    return baseline, np.clip(baseline + shift + rng.normal(0, 0.1, n), -1, 1)


@pytest.fixture
def paired_store(tmp_path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """resnet50 baseline on images 0..59, DCLS on 10..69 (50 common images), centre bias on 0..69."""
    url = _url(tmp_path)
    x, y = _values(70, seed=1, shift=0.08)
    centre = np.linspace(0.0, 0.5, 70)
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=x[:60], indices=range(60), param_count=25_557_032, dataset_size=70)
        add_run(store, model="resnet50", dcls=True, values=y[10:], indices=range(10, 70), param_count=25_557_032, dataset_size=70)
        add_run(
            store,
            model="centre-bias",
            dcls=False,
            values=centre,
            method="centre-bias",
            params={"sigma_frac": 0.25},
            family="reference",
            dataset_size=70,
        )
    return url, x, y, centre


def test_statistics_on_the_common_images_against_scipy(paired_store) -> None:
    url, x, y, centre = paired_store
    result = compare(url)
    (row,) = result.comparisons
    common = slice(10, 60)
    d = y[common] - x[common]
    assert row.n_pairs == 50
    assert row.baseline == pytest.approx(x[common].mean() / CEILING, rel=1e-12)  # float64 rounding of n-term sums (n: the sample size)
    assert row.dcls == pytest.approx(y[common].mean() / CEILING, rel=1e-12)  # float64 rounding of n-term sums (n: the sample size)
    assert row.delta == pytest.approx(d.mean() / CEILING, rel=1e-12)  # float64 rounding of n-term sums (n: the sample size)
    # float64: the p-value's series/normal approximation, rounded over n terms
    assert row.p_value == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-9)
    assert row.ci_low < row.delta < row.ci_high
    ci = stats.bootstrap((d,), np.mean, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    se = d.std() / math.sqrt(d.size) / CEILING
    # not rounding: the Monte-Carlo error of percentiles from other resamples, a few hundredths of an SE
    assert row.ci_low == pytest.approx(ci.low / CEILING, abs=0.2 * se)
    assert row.ci_high == pytest.approx(ci.high / CEILING, abs=0.2 * se)
    assert row.verdict == "better"
    assert row.centre_bias == pytest.approx(
        centre[common].mean() / CEILING, rel=1e-12
    )  # float64 rounding of n-term sums (n: the sample size)
    assert row.centre_bias_n == 50
    assert row.scale.startswith("alignment score")
    assert any("50 images both runs scored" in note for note in row.notes)
    assert compare(url).to_json() == result.to_json()  # seeded: the same answer every time


def test_cli_table_and_ranking(paired_store) -> None:
    url, *_ = paired_store
    result = runner.invoke(app, ["compare", "--db", url])
    assert result.exit_code == 0, result.output
    assert "DCLS vs baseline" in result.output and "Ranking" in result.output
    assert "centre bias" in result.output and "better" in result.output
    assert "50" in result.output  # the number of pairs is shown


def test_json_is_one_document_of_rows(paired_store) -> None:
    url, *_ = paired_store
    result = runner.invoke(app, ["compare", "--db", url, "--json", "--explainer", "threshold"])  # an alias
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 1
    for key in ("model", "baseline", "dcls", "delta", "ci_low", "ci_high", "p_value", "n_pairs", "verdict", "centre_bias"):
        assert key in rows[0]
    assert rows[0]["model"] == "resnet50" and rows[0]["n_pairs"] == 50


def test_one_sided_store_shows_the_missing_side(tmp_path: Path) -> None:
    url = _url(tmp_path)
    x, _ = _values(30, seed=2)
    with open_store(url) as store:
        add_run(store, model="convnext_tiny", dcls=False, values=x)
    result = runner.invoke(app, ["compare", "--db", url])
    assert result.exit_code == 0, result.output
    assert "missing DCLS run" in result.output
    assert "alignbench score convnext_tiny --dcls" in result.stdout  # what to run
    as_json = runner.invoke(app, ["compare", "--db", url, "--json"])
    assert "alignbench score convnext_tiny --dcls" in as_json.stderr  # stdout holds the JSON alone
    (row,) = json.loads(as_json.stdout)
    assert row["dcls"] is None and row["delta"] is None and row["n_pairs"] == 0
    assert row["baseline"] == pytest.approx(x.mean() / CEILING, rel=1e-12)  # float64 rounding of n-term sums (n: the sample size)


def test_no_ceiling_means_plain_mean_spearman_and_too_few_pairs(tmp_path: Path) -> None:
    url = _url(tmp_path)
    x, y = _values(MIN_PAIRS - 1, seed=3, shift=0.3)
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=x, dataset="folder", dataset_fingerprint="f1", ceiling=None)
        add_run(store, model="resnet50", dcls=True, values=y, dataset="folder", dataset_fingerprint="f1", ceiling=None)
    (row,) = compare(url).comparisons
    assert row.scale == "mean spearman"
    # float64 rounding of n-term sums (n: the sample size)
    assert row.baseline == pytest.approx(x.mean(), rel=1e-12) and row.delta == pytest.approx((y - x).mean(), rel=1e-12)
    assert row.verdict == "too few pairs"


def test_several_runs_on_one_side_compare_the_most_complete(tmp_path: Path) -> None:
    url = _url(tmp_path)
    x, y = _values(40, seed=4, shift=-0.2)
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=x)
        add_run(store, model="resnet50", dcls=True, values=y[:20], checkpoint="from-dense")
        best = add_run(store, model="resnet50", dcls=True, values=y, checkpoint="published")
        with store.session() as session:
            result = compare_runs(session)
    (row,) = result.comparisons
    assert row.dcls_run_id == best and row.n_pairs == 40 and row.verdict == "worse"
    assert any("2 DCLS runs match" in note for note in row.notes)
    assert len(result.groups[0].ranking) == 3  # every run is ranked


def test_runs_on_other_datasets_or_protocols_are_not_paired(tmp_path: Path) -> None:
    url = _url(tmp_path)
    x, y = _values(20, seed=5)
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=x, protocol="aligned")
        add_run(store, model="resnet50", dcls=True, values=y, protocol="paper")
    rows = compare(url).comparisons
    assert sorted(r.verdict for r in rows) == ["missing DCLS run", "missing baseline run"]
    assert [r.protocol for r in compare(url, protocol="paper").comparisons] == ["paper"]


def test_empty_or_missing_store_or_no_match_exit_1_saying_what_to_run(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["compare", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert missing.exit_code == 1 and "alignbench score" in missing.stderr
    url = _url(tmp_path)
    open_store(url).close()  # an empty store
    empty = runner.invoke(app, ["compare", "--db", url])
    assert empty.exit_code == 1 and "no runs stored yet" in empty.stderr
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2])
    unmatched = runner.invoke(app, ["compare", "--db", url, "--dataset", "sample"])
    assert unmatched.exit_code == 1 and "--dataset sample" in unmatched.stderr
    assert unmatched.stdout == ""
    with pytest.raises(AlignbenchError):
        compare(url, metric="no-such-metric")


def test_compare_and_report_never_import_torch(paired_store) -> None:
    url, *_ = paired_store
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from alignbench.cli.app import app
        for command in (["compare"], ["compare", "--json"], ["report"], ["report", "--json"], ["report", "--run", "1", "--worst", "3"]):
            result = CliRunner().invoke(app, [*command, "--db", {url!r}])
            assert result.exit_code == 0, (command, result.output)
        assert "torch" not in sys.modules, "compare/report imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
