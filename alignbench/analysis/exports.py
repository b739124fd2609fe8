"""Report exports through pandas: CSV files, one JSON document, Markdown tables.

pandas is imported on first use only: it costs half a second, and the plain report does not need it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignbench.analysis.report import Report

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# Counts and ids: nullable integers, so a missing value does not turn 25557032 into 25557032.0
_INTEGER_COLUMNS = frozenset(
    {
        "run_id",
        "baseline_run_id",
        "dcls_run_id",
        "param_count",
        "n_images",
        "n_rows",
        "n_scored",
        "n_skipped",
        "n_pairs",
        "n_models",
        "count",
        "image_index",
        "target",
        "prediction",
    }
)


def frames(report: Report) -> dict[str, pd.DataFrame]:
    """Every table of the report as a DataFrame (columns as in ``Report.tables``)."""
    import pandas as pd

    out = {}
    for name, rows in report.tables().items():
        frame = pd.DataFrame.from_records(rows)
        integers = {column: "Int64" for column in frame.columns if column in _INTEGER_COLUMNS}
        out[name] = frame.astype(integers) if integers else frame
    return out


def main_table(report: Report) -> str:
    """The table a single-file export holds: the worst images with ``--run``, else the runs."""
    return "worst" if report.worst_run is not None else "runs"


def write_csv(report: Report, path: str | Path) -> Path:
    """The report's main table (see ``main_table``) as CSV; ``pandas.read_csv`` reads it back."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    frames(report)[main_table(report)].to_csv(path, index=False)
    return path


def json_document(report: Report) -> dict[str, Any]:
    """One JSON-ready document: the metric and every table as a list of records (NaN → null)."""
    document: dict[str, Any] = {"metric": report.metric}
    for name, frame in frames(report).items():
        # pandas writes NaN as null and numpy numbers as JSON numbers
        document[name] = json.loads(frame.to_json(orient="records", double_precision=15)) if len(frame) else []
    if report.message:
        document["message"] = report.message
    return document


def _cell(value: Any) -> str:
    import pandas as pd

    if pd.isna(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def to_markdown(report: Report) -> str:
    """Every non-empty table (histograms excepted) as a GitHub Markdown table under a heading.

    Written here rather than with ``DataFrame.to_markdown``, which needs the tabulate package.
    """
    parts = []
    for name, frame in frames(report).items():
        if name == "histograms" or frame.empty:
            continue
        header = "| " + " | ".join(map(str, frame.columns)) + " |"
        rule = "|" + "|".join("---" for _ in frame.columns) + "|"
        rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
        parts.append("\n".join([f"## {name.replace('_', ' ')}", "", header, rule, *rows]))
    return "\n\n".join(parts) + "\n"
