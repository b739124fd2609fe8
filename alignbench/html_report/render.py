"""The HTML report's layout: the page model rendered by the Jinja2 templates in ``templates/``
(autoescaped: the templates hold the only markup)."""

from __future__ import annotations

from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from alignbench.html_report.charts import Chart
from alignbench.html_report.page import HtmlPage

OVERLAY_ALPHA = 0.5  # the map's weight in an overlay, as in explain's (the templates' CSS opacity)


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("alignbench.html_report", "templates"),
        autoescape=True,  # every value is escaped; the templates hold the only markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=1)
def _cached_environment() -> Environment:
    return _environment()


def render_chart(chart: Chart) -> str:
    """One figure as an SVG document."""
    return _cached_environment().get_template("chart.svg.j2").render(chart=chart)


def render_page(page: HtmlPage) -> str:
    """The page's HTML (one file; its pictures and figures are ``page.assets``)."""
    return _cached_environment().get_template(page.template).render(page=page, overlay_alpha=OVERLAY_ALPHA)
