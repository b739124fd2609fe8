"""`alignbench report`: tables, terminal figures without a TTY, exports round-tripping through pandas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from alignbench.analysis import exports
from alignbench.analysis.plots import figure_data, terminal_figures
from alignbench.analysis.report import report
from alignbench.cli.app import app
from alignbench.store import open_store
from alignbench.testing.synthetic import PAPER_ARCHITECTURES, add_run, fill_paper_like_store

runner = CliRunner()


@pytest.fixture(scope="module")
def paper_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The paper's eight architectures × (baseline, DCLS) × two explainers on 40 images, plus centre bias."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 's.db'}"
    with open_store(url) as store:
        fill_paper_like_store(store, n_images=40, methods=("gradcam", "threshold-gradcam"), seed=3)
    return url


def test_report_tables_and_parameter_correlation(paper_store: str) -> None:
    result = report(paper_store)
    assert len(result.runs) == 8 * 2 * 2 + 1
    assert len(result.pairings) == 16 and all(p.complete and p.n_pairs == len(p.x) for p in result.pairings)
    fits = {fit.group.method: fit for fit in result.parameter_fits}
    assert set(fits) == {"gradcam", "threshold-gradcam"}
    fit = fits["gradcam"]
    baselines = {r.view.model: r for r in result.runs if r.view.method == "gradcam" and not r.view.dcls}
    params = np.array([baselines[m].view.param_count for m in fit.models], dtype=float)
    scores = np.array([baselines[m].score for m in fit.models])
    assert fit.pearson_r == pytest.approx(
        stats.pearsonr(params, scores).statistic, rel=1e-12
    )  # float64 rounding of n-term sums (n: the sample size)
    # float64 rounding of n-term sums (n: the sample size)
    assert fit.spearman_rho == pytest.approx(stats.spearmanr(params, scores).statistic, rel=1e-12)
    assert len(fit.models) == len(PAPER_ARCHITECTURES)


def test_figures_render_without_a_tty(paper_store: str) -> None:
    result = report(paper_store)
    data = figure_data(result)
    assert len(data.scatter) == 2 and len(data.bars.series) == 4 and len(data.histograms) == 33
    figures = terminal_figures(result, width=100)
    text = "\n".join(figures)
    for title in ("Fig. 2", "Fig. 3", "Fig. 4", "run 1: resnet50"):
        assert title in text
    assert "\x1b[" not in text  # no colour codes without a terminal
    cli = runner.invoke(app, ["report", "--db", paper_store])
    assert cli.exit_code == 0, cli.output
    assert "Stored runs" in cli.stdout and "Fig. 3" in cli.stdout and "centre bias" in cli.stdout


def test_csv_round_trips_through_pandas(paper_store: str, tmp_path: Path) -> None:
    path = tmp_path / "out" / "runs.csv"
    cli = runner.invoke(app, ["report", "--db", paper_store, "--csv", str(path)])
    assert cli.exit_code == 0, cli.output
    expected = exports.frames(report(paper_store))["runs"]
    pd.testing.assert_frame_equal(pd.read_csv(path), expected, check_dtype=False)
    assert list(pd.read_csv(path)["run_id"]) == [r.run_id for r in report(paper_store).runs]


def test_json_round_trips_through_pandas(paper_store: str) -> None:
    cli = runner.invoke(app, ["report", "--db", paper_store, "--json"])
    assert cli.exit_code == 0, cli.output
    document = json.loads(cli.stdout)  # one document, nothing else on stdout
    frames = exports.frames(report(paper_store))
    for name in ("runs", "pairs", "parameter_correlation", "histograms"):
        pd.testing.assert_frame_equal(pd.DataFrame(document[name]), frames[name], check_dtype=False)


def test_markdown_tables(paper_store: str) -> None:
    cli = runner.invoke(app, ["report", "--db", paper_store, "--markdown", "--explainer", "gradcam"])
    assert cli.exit_code == 0, cli.output
    assert "## runs" in cli.stdout and "## pairs" in cli.stdout
    assert "| run_id | model | dcls |" in cli.stdout
    assert "threshold-gradcam" not in cli.stdout  # filtered out
    assert runner.invoke(app, ["report", "--db", paper_store, "--markdown", "--json"]).exit_code == 2


def test_png_files(paper_store: str, tmp_path: Path) -> None:
    cli = runner.invoke(app, ["report", "--db", paper_store, "--png", str(tmp_path / "figs"), "--json"])
    assert cli.exit_code == 0, cli.output
    json.loads(cli.stdout)  # the paths go to stderr
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["fig2_dcls_vs_baseline.png", "fig3_explainers.png", "fig4_parameters.png", "histograms.png"]
    assert all((tmp_path / "figs" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


def test_worst_images_of_one_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    values = np.array([0.5, -0.3, np.nan, 0.1, -0.7, 0.9])
    with open_store(url) as store:
        run_id = add_run(store, model="resnet50", dcls=False, values=values, dataset="folder", dataset_fingerprint="f", ceiling=None)
    result = report(url, run_id=run_id, worst=3)
    assert [(w.image_index, w.value) for w in result.worst] == [(4, -0.7), (1, -0.3), (3, 0.1)]
    assert result.runs[0].n_scored == 5 and result.runs[0].n_rows == 6
    path = tmp_path / "worst.csv"
    cli = runner.invoke(app, ["report", "--db", url, "--run", str(run_id), "--worst", "3", "--csv", str(path)])
    assert cli.exit_code == 0, cli.output
    assert "agrees with humans least" in cli.stdout and "img-000004" in cli.stdout
    assert list(pd.read_csv(path)["image_index"]) == [4, 1, 3]
    assert runner.invoke(app, ["report", "--db", url, "--worst", "3"]).exit_code == 2  # --worst needs --run
    missing = runner.invoke(app, ["report", "--db", url, "--run", "99"])
    assert missing.exit_code == 2 and "no run 99" in missing.stderr


def test_empty_or_missing_store_exits_0_saying_what_to_run(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["report", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert missing.exit_code == 0 and "alignbench score" in missing.stdout
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_store(url).close()
    empty = runner.invoke(app, ["report", "--db", url, "--json"])
    assert empty.exit_code == 0
    assert json.loads(empty.stdout)["runs"] == [] and "alignbench score" in empty.stderr
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.2, 0.3])
    unmatched = runner.invoke(app, ["report", "--db", url, "--explainer", "gradcam"])
    assert unmatched.exit_code == 0 and "--explainer gradcam" in unmatched.stdout
