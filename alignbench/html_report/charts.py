"""The HTML report's figures as SVG: the paper's figures 2-4 and the per-run histograms.

The same figure data as the terminal plots and ``report --png`` (``alignbench.analysis.plots.figure_data``),
laid out here in pixels (plain dataclasses: axes, ticks, marks, legend) and drawn by the template
``templates/chart.svg.j2``. No matplotlib: drawing four figures with it cost more than reading the
store, and a browser draws vector figures sharply at any zoom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from alignbench.analysis.plots import DCLS_SUFFIX, FigureData, figure_data
from alignbench.analysis.report import Report

# matplotlib's default colour cycle (tab10), so the figures keep the colours of `report --png`
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_CHAR_PX = 6.2  # the width of a character of the 11 px sans-serif labels, for margins


@dataclass(frozen=True)
class Tick:
    at: float  # pixels along its axis
    label: str


@dataclass(frozen=True)
class Circle:
    x: float
    y: float
    colour: str
    title: str


@dataclass(frozen=True)
class Line:
    points: str  # "x,y x,y ..." in pixels
    colour: str
    width: float = 1.0
    dashed: bool = False


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    colour: str
    hatched: bool
    title: str


@dataclass(frozen=True)
class Polygon:
    points: str
    colour: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"  # start | middle | end
    size: int = 9


@dataclass(frozen=True)
class LegendEntry:
    label: str
    colour: str
    kind: str  # dot | bar | hatched | dashed


@dataclass
class Chart:
    """One figure: a plot area with axes and ticks, its marks, and a legend."""

    name: str  # the file's stem
    title: str
    xlabel: str
    ylabel: str
    width: float
    height: float
    left: float
    top: float
    right: float
    bottom: float
    xticks: list[Tick] = field(default_factory=list)
    yticks: list[Tick] = field(default_factory=list)
    rotate_xticks: bool = False
    circles: list[Circle] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    rects: list[Rect] = field(default_factory=list)
    polygons: list[Polygon] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)
    legend_y: float | None = None  # the first legend entry's baseline (default: inside the plot area, top left)

    def __post_init__(self) -> None:
        if self.legend_y is None:
            self.legend_y = self.top + 14


class _Axis:
    """A linear map from data to pixels, with ticks at 1, 2 or 5 × a power of ten."""

    def __init__(self, low: float, high: float, start: float, end: float) -> None:
        if not high > low:
            low, high = low - 0.5, high + 0.5
        pad = 0.05 * (high - low)
        self.low, self.high, self.start, self.end = low - pad, high + pad, start, end

    def __call__(self, value: float) -> float:
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self, count: int = 6) -> list[Tick]:
        raw = (self.high - self.low) / count
        power = 10 ** math.floor(math.log10(raw))
        multiple = next(m for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
        step = multiple * power
        digits = max(0, -math.floor(math.log10(step) + 1e-9) + (1 if multiple == 2.5 else 0))
        first = math.ceil(self.low / step)
        return [Tick(round(self(k * step), 2), f"{k * step:.{digits}f}") for k in range(first, math.floor(self.high / step) + 1)]


def _span(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 0.05:  # nearly equal scores (a from-dense DCLS model) would give a degenerate axis
        middle = (low + high) / 2
        low, high = middle - 0.025, middle + 0.025
    return low, high


def _points(pairs: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in pairs)


def _frame(
    name: str, title: str, xlabel: str, ylabel: str, width: float, height: float, *, legend: int, left: float = 64, bottom: float = 52
) -> Chart:
    """A chart whose ``legend`` entries sit above the plot area (never over the data)."""
    height += 16 * legend
    top = 46 + 16 * legend
    return Chart(name, title, xlabel, ylabel, width, height, left, top, width - 16, height - bottom, legend_y=42)


def _scatter(data: FigureData) -> Chart:
    """Figure 2: DCLS against baseline per architecture, every explainer setting on one axes."""
    chart = _frame(
        "fig2_dcls_vs_baseline", "DCLS vs baseline", f"baseline {data.scale}", f"DCLS {data.scale}", 520, 520, legend=len(data.scatter) + 1
    )
    low, high = _span([v for s in data.scatter for v in (*s.baseline, *s.dcls)])
    x, y = _Axis(low, high, chart.left, chart.right), _Axis(low, high, chart.bottom, chart.top)
    chart.xticks, chart.yticks = x.ticks(), y.ticks()
    chart.lines.append(Line(_points([(x(low), y(low)), (x(high), y(high))]), "#000000", dashed=True))
    for n, series in enumerate(data.scatter):
        colour = COLOURS[n % len(COLOURS)]
        for model, a, b in zip(series.models, series.baseline, series.dcls):
            chart.circles.append(Circle(x(a), y(b), colour, f"{model}: baseline {a:.4f}, DCLS {b:.4f}"))
            chart.labels.append(Label(x(a) + 5, y(b) - 5, model))
        chart.legend.append(LegendEntry(series.label, colour, "dot"))
    chart.legend.append(LegendEntry("y = x (no change)", "#000000", "dashed"))
    return chart


def _bars(data: FigureData) -> Chart:
    """Figure 3: per architecture, a bar per explainer with and without DCLS (hatched)."""
    models, series = data.bars.models, data.bars.series
    width = max(520, 90 * len(models))
    chart = _frame(
        "fig3_explainers", "Per model and explainer, with and without DCLS", "", data.scale, width, 420, legend=len(series), bottom=96
    )
    scores = [s for values in series.values() for s in values if s is not None]
    y = _Axis(min(0.0, *scores), max(0.0, *scores), chart.bottom, chart.top)
    chart.yticks = y.ticks()
    slot = (chart.right - chart.left) / len(models)
    bar = 0.8 * slot / len(series)
    chart.xticks = [Tick(round(chart.left + slot * (k + 0.5), 2), model) for k, model in enumerate(models)]
    chart.rotate_xticks = True
    colours = _series_colours(list(series))
    for n, (label, values) in enumerate(series.items()):
        hatched = label.endswith(DCLS_SUFFIX)
        for k, score in enumerate(values):
            if score is None:
                continue
            left = chart.left + slot * (k + 0.1) + bar * n
            top, base = sorted((y(score), y(0.0)))
            chart.rects.append(Rect(left, top, bar, base - top, colours[label], hatched, f"{models[k]} · {label}: {score:.4f}"))
        chart.legend.append(LegendEntry(label, colours[label], "hatched" if hatched else "bar"))
    chart.lines.append(Line(_points([(chart.left, y(0.0)), (chart.right, y(0.0))]), "#444444"))
    return chart


def _series_colours(labels: list[str]) -> dict[str, str]:
    """One colour per explainer: its DCLS series shares it (hatched), as the bars pair up."""
    bases: list[str] = []
    for label in labels:
        base = label.removesuffix(DCLS_SUFFIX)
        if base not in bases:
            bases.append(base)
    return {label: COLOURS[bases.index(label.removesuffix(DCLS_SUFFIX)) % len(COLOURS)] for label in labels}


def _parameters(data: FigureData) -> Chart:
    """Figure 4: the baselines' parameter count (millions) against their score."""
    chart = _frame(
        "fig4_parameters", "Baselines: parameter count vs score", "parameters (millions)", data.scale, 560, 420, legend=len(data.fits)
    )
    xs = [p / 1e6 for fit in data.fits for p in fit.param_counts]
    ys = [s for fit in data.fits for s in fit.scores]
    x, y = _Axis(min(xs), max(xs), chart.left, chart.right - 60), _Axis(*_span(ys), chart.bottom, chart.top)
    chart.xticks, chart.yticks = x.ticks(), y.ticks()
    for n, fit in enumerate(data.fits):
        colour = COLOURS[n % len(COLOURS)]
        for model, count, score in zip(fit.models, fit.param_counts, fit.scores):
            chart.circles.append(Circle(x(count / 1e6), y(score), colour, f"{model}: {count / 1e6:.1f} M, {score:.4f}"))
            chart.labels.append(Label(x(count / 1e6) + 5, y(score) - 5, model))
        label = f"{fit.group.explainer_label}: r = {fit.pearson_r:.2f}, ρ = {fit.spearman_rho:.2f}"
        chart.legend.append(LegendEntry(label, colour, "dot"))
    return chart


def _histograms(data: FigureData, metric: str) -> Chart:
    """Per run, the histogram of its per-image values as one row of a ridgeline, scaled to its own
    peak, with a tick at its mean."""
    hists = data.histograms
    labels = [f"run {h.run.run_id}: {h.run.display_name} · {h.run.view.method} ({int(h.counts.sum()):,})" for h in hists]
    left = 16 + _CHAR_PX * max(len(label) for label in labels)
    row = 30.0
    height = 90 + row * len(hists)
    chart = Chart(
        "histograms",
        f"Per-image {metric} per run",
        f"per-image {metric} (black: the run's mean; in brackets: images scored)",
        "",
        left + 560,
        height,
        left,
        36,
        left + 540,
        height - 52,
    )
    edges = [float(e) for h in hists for e in (h.edges[0], h.edges[-1]) if h.edges.size]
    x = _Axis(min(edges, default=0.0), max(edges, default=1.0), chart.left, chart.right)
    chart.xticks = x.ticks()
    for n, (hist, label) in enumerate(zip(hists, labels)):
        base = chart.top + row * (n + 1)
        colour = COLOURS[n % len(COLOURS)]
        peak = max(int(hist.counts.max()), 1) if hist.counts.size else 1
        outline = [(x(float(hist.edges[0])), base)] if hist.edges.size else []
        for k, count in enumerate(hist.counts):
            top = base - 0.85 * row * float(count) / peak
            outline += [(x(float(hist.edges[k])), top), (x(float(hist.edges[k + 1])), top)]
        if outline:
            outline.append((x(float(hist.edges[-1])), base))
            chart.polygons.append(Polygon(_points(outline), colour, label))
        if hist.run.mean is not None:
            chart.lines.append(Line(_points([(x(hist.run.mean), base), (x(hist.run.mean), base - 0.9 * row)]), "#000000"))
        chart.yticks.append(Tick(round(base - 0.3 * row, 2), label))
    return chart


def figure_charts(report: Report) -> list[Chart]:
    """The report's figures, those its data has: figure 2, 3, 4 and the histograms."""
    data = figure_data(report)
    charts = []
    if data.scatter:
        charts.append(_scatter(data))
    if data.bars.models and data.bars.series:
        charts.append(_bars(data))
    if data.fits:
        charts.append(_parameters(data))
    if data.histograms:
        charts.append(_histograms(data, report.metric))
    return charts
