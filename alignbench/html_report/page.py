"""The HTML report's page model: plain dataclasses, laid out by the Jinja2 templates in ``templates/``.

A page is tables of display strings and sort keys, figures, galleries of pictures, and every file
the page links to as bytes (``assets``). ``alignbench.html_report.build`` builds it from the store,
``alignbench.html_report.render`` lays it out. Nothing here reads the store or computes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from alignbench import __version__


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str | None = None  # what the column sorts on (numbers numerically); None: the text
    title: str | None = None  # hover text
    link: str | None = None  # an anchor or page this cell links to


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    row_classes: tuple[str, ...] = ()  # one per row: "reference" marks the centre-bias run
    caption: str = ""
    sortable: bool = True


@dataclass(frozen=True)
class Figure:
    src: str
    caption: str


@dataclass(frozen=True)
class Picture:
    """One picture of a gallery row; ``source``: the stored thumbnail it was drawn from (None: drawn here)."""

    src: str | None  # path inside the report; None: not available (``alt`` says why)
    alt: str
    source: tuple[int, str, str] | None = None  # (run id, image id, kind)


@dataclass(frozen=True)
class MapView:
    """One map of a gallery row (the page shows it over the row's picture and on its own)."""

    label: str  # human map, baseline, DCLS, centre bias
    kind: str  # human | model | centre-bias (CSS class)
    plain: Picture
    score: str  # the image's metric value for this map, e.g. "ρ = +0.512"
    note: str = ""  # the prediction of the model this map explains


@dataclass(frozen=True)
class GalleryRow:
    image_id: str
    image_index: int
    target: str
    picture: Picture
    maps: tuple[MapView, ...]
    delta: str = ""  # second − first run, for a comparison
    scale: str = ""  # the model maps' shared colour scale


@dataclass(frozen=True)
class GallerySection:
    title: str
    rows: tuple[GalleryRow, ...]


@dataclass(frozen=True)
class Gallery:
    anchor: str
    title: str
    columns: tuple[str, ...]  # picture, human, each run's label, centre bias
    sections: tuple[GallerySection, ...]
    missing: tuple[str, ...] = ()  # why some maps are not shown
    reference: str = ""  # what the reference map of this dataset is

    @property
    def has_pictures(self) -> bool:
        """Whether any image or model map is shown (else the template lists the images and scores only)."""
        return any(row.picture.src for section in self.sections for row in section.rows)


@dataclass(frozen=True)
class ImageTable:
    """A run's every stored image, laid out client-side (filtered, sorted and paged by the inline script)."""

    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: list[list[Any]]


@dataclass
class HtmlPage:
    title: str
    generated: str
    version: str
    store: str
    filters: str
    message: str | None = None  # why there is nothing to show (empty store)
    runs: Table | None = None
    details: Table | None = None  # the --run page: what the run is
    comparisons: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    images: ImageTable | None = None
    notes: list[str] = field(default_factory=list)
    colour_bar: str | None = None
    assets: dict[str, bytes] = field(default_factory=dict)  # path inside the report → bytes

    @property
    def template(self) -> str:
        return "run.html.j2" if self.details is not None else "index.html.j2"


def message_page(message: str | None, *, store: str = "", filters: str = "none") -> HtmlPage:
    """A page with nothing but ``message`` (an empty or missing store)."""
    return HtmlPage(
        "alignbench report", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), __version__, store, filters, message=message
    )
