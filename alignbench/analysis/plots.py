"""The report's figures: in the terminal with plotext, and as PNG files with matplotlib.

Each figure is computed once as data (``figure_data``) and drawn by both back ends, so the terminal
and the PNGs always show the same thing. Terminal plots are returned as text (never printed here),
so they render without a TTY; matplotlib is imported only when PNGs are asked for.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from alignbench._utils.deferred import import_deferring
from alignbench.analysis.report import Histogram, ParameterFit, Report
from alignbench.analysis.runs import Pairing, score_label, score_name
from alignbench.models.specs import variant_name

# coloured series on the terminal's own background (plotext's default theme paints it white); set
# before titles and labels, which take the theme's colours when they are set
_THEME = "simple"
# one fill character per bar series, so the bars read apart without colours (and in a pipe)
_BAR_MARKERS = ("█", "▓", "▒", "░", "#", "=", "+", ":")
# a DCLS series of figure 3 is named like a DCLS model variant: "<explainer> + DCLS" (hatched in the PNG)
DCLS_SUFFIX = variant_name("", dcls=True)


@dataclass(frozen=True)
class ScatterSeries:
    label: str
    models: tuple[str, ...]
    baseline: tuple[float, ...]
    dcls: tuple[float, ...]


@dataclass(frozen=True)
class BarChart:
    models: tuple[str, ...]
    series: dict[str, tuple[float | None, ...]]  # label → one score per model (None: not stored)


@dataclass(frozen=True)
class FigureData:
    scale: str  # what the scores are, in full
    scale_name: str  # in a few words, for titles
    scatter: list[ScatterSeries]  # figure 2
    bars: BarChart  # figure 3
    fits: list[ParameterFit]  # figure 4
    histograms: list[Histogram]


def _series_label(pairing: Pairing, several_settings: bool) -> str:
    group = pairing.group
    return f"{group.explainer_label} · {group.dataset} · {group.protocol}" if several_settings else group.explainer_label


def figure_data(report: Report) -> FigureData:
    pairings = report.pairings
    several = len({(p.group.dataset, p.group.dataset_fingerprint, p.group.protocol) for p in pairings}) > 1
    points: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    bars: dict[str, dict[str, float]] = defaultdict(dict)
    models: list[str] = []
    for p in pairings:
        label = _series_label(p, several)
        if p.model not in models:
            models.append(p.model)
        if p.complete and p.n_pairs:
            points[label].append((p.model, p.baseline_score, p.dcls_score))
        if p.baseline_score is not None:
            bars[label][p.model] = p.baseline_score
        if p.dcls_score is not None:
            bars[variant_name(label, dcls=True)][p.model] = p.dcls_score
    scatter = [ScatterSeries(label, *map(tuple, zip(*rows))) for label, rows in points.items()]
    chart = BarChart(tuple(models), {label: tuple(scores.get(m) for m in models) for label, scores in sorted(bars.items())})
    models_runs = [r for r in report.runs if not r.is_reference]
    labels = {score_label(r.metric, r.view.ceiling) for r in models_runs}
    names = {score_name(r.metric, r.view.ceiling) for r in models_runs}
    scale = labels.pop() if len(labels) == 1 else f"score (mean {report.metric} / human ceiling where the dataset has one)"
    scale_name = names.pop() if len(names) == 1 else "score"
    return FigureData(scale, scale_name, scatter, chart, report.parameter_fits, report.histograms)


# --- terminal (plotext) -----------------------------------------------------------------------


def _new_figure(width: int, height: int):
    # plotext builds its interactive documentation (plotext.doc) at import, as long as the rest of
    # it: deferred until used, which the report never does (alignbench._utils.deferred)
    plotext = import_deferring("plotext", {"plotext._doc.doc": ("docs",)})

    plotext.terminal.limit(False, False)  # the caller sizes the plot; without a TTY plotext would assume 80×24
    figure = plotext.figure
    figure.clear()
    figure.plot_size(width, height)
    figure.theme(_THEME)
    return figure


def _text(figure, colour: bool) -> str:
    return figure.build().string(colorless=not colour)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    # at least 0.05: nearly equal scores (a from-dense DCLS model, Δ ~ 1e-8) would otherwise give
    # plotext a degenerate axis and no visible diagonal
    pad = max((high - low) * 0.05, 0.05)
    return low - pad, high + pad


def _model_keys(models: tuple[str, ...]) -> dict[str, str]:
    """One letter per model: the terminal scatter plots mark each point with its model's letter."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return {model: letters[i % len(letters)] for i, model in enumerate(models)}


def _key_line(keys: dict[str, str], width: int) -> str:
    entries = [f"{letter} {model}" for model, letter in keys.items()]
    lines, line = [], ""
    for entry in entries:
        if line and len(line) + 3 + len(entry) > width:
            lines.append(line)
            line = ""
        line = f"{line}   {entry}" if line else entry
    return "\n".join(lines + [line])


def terminal_scatter(data: FigureData, *, width: int = 100, height: int = 22, colour: bool = False) -> list[str]:
    """Figure 2, one plot per explainer setting: DCLS against baseline per architecture, with y = x."""
    plots = []
    for series in data.scatter:
        figure = _new_figure(width, height)
        low, high = _span([*series.baseline, *series.dcls])
        diagonal = figure.signal([low, high], [low, high])  # drawn first: the points are drawn over it
        diagonal.lines()
        figure.draw(diagonal)
        keys = _model_keys(series.models)
        figure.draw(figure.signal(list(series.baseline), list(series.dcls), marker=[keys[m] for m in series.models]))
        figure.legend(False)
        figure.title(_fit(f"Fig. 2 — DCLS vs baseline ({data.scale_name}) · {series.label}", width - 4))
        figure.label("baseline", axis="x")
        figure.label("DCLS", axis="y")
        plots.append(_text(figure, colour) + "\n" + _key_line(keys, width) + "\nabove the diagonal y = x: DCLS scores higher")
    return plots


def terminal_bars(data: FigureData, *, width: int = 100, colour: bool = False) -> list[str]:
    """Figure 3: per architecture (one row each), a bar per explainer with and without DCLS."""
    chart = data.bars
    if not chart.models or not chart.series:
        return []
    n = len(chart.series)
    # two text rows per bar and one between models: bars never share a row, so the fill characters
    # tell the series apart without colours
    rows_per_model = 2 * n + 1
    figure = _new_figure(width, len(chart.models) * rows_per_model + 4)
    bar_width = 2 / rows_per_model
    legend = []
    for i, (label, scores) in enumerate(chart.series.items()):
        marker = _BAR_MARKERS[i % len(_BAR_MARKERS)]
        offset = (i - (n - 1) / 2) * bar_width
        positions = [k + 1 + offset for k, score in enumerate(scores) if score is not None]
        heights = [score for score in scores if score is not None]
        if heights:
            figure.draw(figure.bar(positions, heights, width=0.8 * bar_width, marker=marker, orientation="h"))
        legend.append(f"{marker} {label}")
    figure.ruler("y").ticks(list(range(1, len(chart.models) + 1)), labels=list(chart.models))
    figure.ruler("y").lim(0.5, len(chart.models) + 0.5)
    figure.legend(False)
    figure.title(_fit(f"Fig. 3 — {data.scale_name} per model and explainer, with and without DCLS", width - 4))
    # plotext stacks a group's bars upwards: list the legend in that order
    return [_text(figure, colour) + "\n" + "\n".join(reversed(legend))]


def terminal_parameters(data: FigureData, *, width: int = 100, height: int = 20, colour: bool = False) -> list[str]:
    """Figure 4, one plot per explainer setting: parameter count (millions) against the baselines' score."""
    plots = []
    for fit in data.fits:
        figure = _new_figure(width, height)
        keys = _model_keys(fit.models)
        figure.draw(figure.signal([p / 1e6 for p in fit.param_counts], list(fit.scores), marker=[keys[m] for m in fit.models]))
        figure.legend(False)
        figure.title(_fit(f"Fig. 4 — baselines: parameters vs {data.scale_name} · {fit.group.explainer_label}", width - 4))
        figure.label("parameters (millions)", axis="x")
        figure.label("score", axis="y")
        summary = f"Pearson r = {fit.pearson_r:.3f}, Spearman ρ = {fit.spearman_rho:.3f} over {len(fit.models)} models"
        plots.append(_text(figure, colour) + "\n" + _key_line(keys, width) + "\n" + summary)
    return plots


def terminal_histograms(data: FigureData, *, width: int = 100, height_each: int = 11, colour: bool = False) -> list[str]:
    """Per run, the histogram of its per-image values, two or three to a row."""
    if not data.histograms:
        return []
    columns = 1 if len(data.histograms) == 1 else (3 if width >= 150 else 2)
    rows = -(-len(data.histograms) // columns)
    figure = _new_figure(width, height_each * rows)
    if len(data.histograms) > 1:
        figure.subplots(rows, columns)
        figure.theme(_THEME)  # again, for the new subplots
    for k, hist in enumerate(data.histograms):
        sub = figure.subplot(k // columns + 1, k % columns + 1) if len(data.histograms) > 1 else figure
        centres = ((hist.edges[:-1] + hist.edges[1:]) / 2).tolist()
        sub.draw(sub.bar(centres, hist.counts.tolist(), width=1))
        mean = "" if hist.run.mean is None else f" · mean {hist.run.mean:.3f}"
        title = f"run {hist.run.run_id}: {hist.run.display_name}{mean}"
        sub.title(_fit(title, width // columns - 6))  # plotext drops a title wider than its plot
        low, high = float(hist.edges[0]), float(hist.edges[-1])
        sub.ruler("x").ticks([low, (low + high) / 2, high], labels=[f"{low:g}", f"{(low + high) / 2:g}", f"{high:g}"])
    return [_text(figure, colour)]


def terminal_figures(report: Report, *, width: int = 100, colour: bool = False) -> list[str]:
    """All figures of the report as text, in the paper's order, then the histograms."""
    data = figure_data(report)
    return [
        *terminal_scatter(data, width=width, colour=colour),
        *terminal_bars(data, width=width, colour=colour),
        *terminal_parameters(data, width=width, colour=colour),
        *terminal_histograms(data, width=width, colour=colour),
    ]


# --- PNG (matplotlib) -------------------------------------------------------------------------


def _figure(**options):
    """A matplotlib figure on its own Agg canvas."""
    # Figures made directly on an Agg canvas, without pyplot (matplotlib's advice for files written
    # by a program): no global figure manager, and pyplot's import was a third of the time. The
    # canvas also gives tight_layout its renderer without a throw-away draw of the whole figure.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only when PNGs are asked for
    from matplotlib.figure import Figure

    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.set_layout_engine(None)  # the margins are set: savefig need not lay the figure out again
    fig.savefig(path, dpi=120)
    return path


def _scatter_png(data: FigureData, path: Path) -> Path:
    """Figure 2: DCLS against baseline per architecture, every explainer setting on one axes."""
    fig = _figure(figsize=(6, 6))
    ax = fig.subplots()
    everything = [v for s in data.scatter for v in (*s.baseline, *s.dcls)]
    low, high = _span(everything)
    for series in data.scatter:
        ax.scatter(series.baseline, series.dcls, label=series.label)
        for model, x, y in zip(series.models, series.baseline, series.dcls):
            ax.annotate(model, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="y = x (no change)")
    ax.set(xlabel=f"baseline {data.scale}", ylabel=f"DCLS {data.scale}", title="DCLS vs baseline")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _bars_png(data: FigureData, path: Path) -> Path:
    """Figure 3: per architecture, a bar per explainer with and without DCLS (hatched)."""
    chart = data.bars
    fig = _figure(figsize=(max(6, 1.2 * len(chart.models)), 4.5))
    ax = fig.subplots()
    bar_width = 0.8 / len(chart.series)
    for i, (label, scores) in enumerate(chart.series.items()):
        xs = [k - 0.4 + bar_width * (i + 0.5) for k, s in enumerate(scores) if s is not None]
        ys = [s for s in scores if s is not None]
        ax.bar(xs, ys, width=bar_width, label=label, hatch="//" if label.endswith(DCLS_SUFFIX) else None)
    ax.set_xticks(range(len(chart.models)), chart.models, rotation=30, ha="right")
    ax.set(ylabel=data.scale, title="Per model and explainer, with and without DCLS")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _parameters_png(data: FigureData, path: Path) -> Path:
    """Figure 4: the baselines' parameter count (millions) against their score."""
    fig = _figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for fit in data.fits:
        ax.scatter(
            [p / 1e6 for p in fit.param_counts],
            fit.scores,
            label=f"{fit.group.explainer_label}: r = {fit.pearson_r:.2f}, ρ = {fit.spearman_rho:.2f}",
        )
        for model, x, y in zip(fit.models, fit.param_counts, fit.scores):
            ax.annotate(model, (x / 1e6, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="parameters (millions)", ylabel=data.scale, title="Baselines: parameter count vs score")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _histograms_png(data: FigureData, metric: str, path: Path) -> Path:
    """Per run, the histogram of its per-image values, as one row of a ridgeline."""
    # One row per run on one axes (a ridgeline): runs compare along one x axis, each histogram
    # scaled to its own peak so runs of any size read alike, a tick at its mean. One axes costs
    # far less than a grid of panels (with 17 runs the grid's ticks and titles were most of the
    # HTML report's time).
    n = len(data.histograms)
    labels = [f"run {h.run.run_id}: {h.run.display_name} · {h.run.view.method} ({int(h.counts.sum()):,})" for h in data.histograms]
    label_width = 0.3 + 0.062 * max(len(label) for label in labels)  # inches at font size 8
    width, height = 5.5 + label_width, 1.0 + max(0.4 * n, 2.0)  # a lone run gets a readable height
    fig = _figure(figsize=(width, height))
    ax = fig.subplots()
    fig.subplots_adjust(left=label_width / width, right=1 - 0.25 / width, bottom=0.55 / height, top=1 - 0.45 / height)
    for row, hist in enumerate(data.histograms):
        base = n - 1 - row  # the first run on top
        peak = max(int(hist.counts.max()), 1) if hist.counts.size else 1
        ax.stairs(base + 0.85 * hist.counts / peak, hist.edges, baseline=base, fill=True, color=f"C{row % 10}", alpha=0.8)
        if hist.run.mean is not None:
            ax.plot([hist.run.mean, hist.run.mean], [base, base + 0.9], color="black", linewidth=1)
    ax.set_yticks([n - 1 - row for row in range(n)], labels, fontsize=8)
    ax.set_ylim(-0.1, n)
    ax.set(xlabel=f"per-image {metric} (black: the run's mean; in brackets: images scored)", title=f"Per-image {metric} per run")
    fig.savefig(path, dpi=120)  # laid out by subplots_adjust above: no tight_layout
    return path


def write_pngs(report: Report, directory: str | Path) -> list[Path]:
    """The same figures as PNG files in ``directory`` (created); returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = figure_data(report)
    written = []
    if data.scatter:
        written.append(_scatter_png(data, directory / "fig2_dcls_vs_baseline.png"))
    if data.bars.models and data.bars.series:
        written.append(_bars_png(data, directory / "fig3_explainers.png"))
    if data.fits:
        written.append(_parameters_png(data, directory / "fig4_parameters.png"))
    if data.histograms:
        written.append(_histograms_png(data, report.metric, directory / "histograms.png"))
    return written
