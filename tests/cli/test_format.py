"""The commands' one number formatter and one summary-table builder."""

from __future__ import annotations

from rich.console import Console

from alignbench.cli._format import number, summary_table


def test_number() -> None:
    assert number(0.123456) == "0.1235"
    assert number(-0.5, signed=True) == "-0.5000"
    assert number(0.25, signed=True) == "+0.2500"
    assert number(None) == "—"
    assert number(None, missing="n/a") == "n/a"


def test_summary_table_is_names_then_values() -> None:
    console = Console(width=60, record=True, color_system=None)
    console.print(summary_table("run 1", [("model", "resnet18"), ("status", "complete")]))
    text = console.export_text()
    assert "run 1" in text and "model" in text and "resnet18" in text and "status" in text
    assert text.index("model") < text.index("resnet18") < text.index("status")
