"""The HTML report's pictures: stored thumbnails turned into palette PNGs, and the paper's figures (SVG).

Colours: maps are drawn with the colour map ``explain`` uses for its overlays (jet), as 8-bit PNGs
whose palette is the colour map, and overlaid on the picture by the page itself at the weight
``explain`` blends them with (CSS opacity, ``render.OVERLAY_ALPHA``: the browser blends exactly as
``explain`` does, with no second file per map). In a gallery row the model maps of every run share
one colour scale (from the lowest to the highest value among them), so a weaker map looks weaker;
the human map and the centre-bias map, in other units, each span their own range.

Every picture is named by a hash of its bytes (so a rewrite of the report can skip it) and added to
the page's ``assets`` once. A stored map is an 8-bit grey PNG whose grey levels span its value range:
on any colour scale, each grey level has one colour, so a map is coloured by giving its PNG a palette
(the same pixel data, colour type 3 instead of 0) — never decoded and encoded again.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
from PIL import Image

from alignbench.analysis.report import Report
from alignbench.html_report.charts import figure_charts
from alignbench.html_report.page import Figure
from alignbench.store.listing import ThumbnailRow

COLOUR_MAP = "jet"  # explain's overlays (alignbench.explainers._files)
PICTURES = "images/"  # where the pictures go, each named by a hash of its bytes (so a rewrite can skip it)
FIGURE_CAPTIONS = {
    "fig2_dcls_vs_baseline": "Fig. 2 — DCLS against baseline per architecture; above the line y = x, DCLS scores higher.",
    "fig3_explainers": "Fig. 3 — each architecture's score per explainer, with and without DCLS.",
    "fig4_parameters": "Fig. 4 — the baselines' parameter count against their score, with Pearson's r and Spearman's ρ.",
    "histograms": "The per-image values of each run.",
}


# matplotlib's "jet" (its _cm._jet_data): (x, value) breakpoints per channel, linear in between,
# sampled at 256 points as matplotlib's colors._create_lookup_table does (its arithmetic, so that
# values on a .5 round alike; tested equal to matplotlib's).
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def jet_lut() -> np.ndarray:
    """(256, 3) uint8: the colours of ``COLOUR_MAP`` for palette indices 0..255, without importing matplotlib."""
    channels = []
    for name in ("red", "green", "blue"):
        x, y = (np.array(column, dtype=np.float64) for column in zip(*_JET[name]))
        x, samples = x * 255, 255 * np.linspace(0.0, 1.0, 256)
        ind = np.searchsorted(x, samples)[1:-1]
        distance = (samples[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
        channels.append(np.concatenate([[y[0]], distance * (y[ind] - y[ind - 1]) + y[ind - 1], [y[-1]]]))
    return np.rint(np.clip(np.stack(channels, axis=1), 0.0, 1.0) * 255.0).astype(np.uint8)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PALETTE_INVALID = {b"tRNS", b"sBIT", b"bKGD", b"hIST"}  # chunks whose layout depends on the colour type


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def with_palette(png: bytes, palette: bytes) -> bytes | None:
    """The 8-bit greyscale PNG ``png`` as a palette PNG whose index g is colour ``palette[3g:3g+3]``:
    the same pixel bytes (one byte per pixel either way), a PLTE chunk, colour type 3. None when
    ``png`` is not a plain 8-bit greyscale PNG."""
    if not png.startswith(_PNG_SIGNATURE):
        return None
    out, position, seen_header = [_PNG_SIGNATURE], len(_PNG_SIGNATURE), False
    while position + 8 <= len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        data = png[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            if len(data) != 13 or data[8] != 8 or data[9] != 0:  # bit depth 8, colour type 0 (grey)
                return None
            out += [_chunk(b"IHDR", data[:9] + b"\x03" + data[10:]), _chunk(b"PLTE", palette)]
            seen_header = True
        elif kind in _PALETTE_INVALID:
            return None
        else:
            out.append(png[position - 12 - length : position])
        if kind == b"IEND":
            break
    return b"".join(out) if seen_header else None


class Painter:
    """Turns stored thumbnails into the report's pictures: maps as palette PNGs, each file once."""

    def __init__(self, assets: dict[str, bytes]) -> None:
        self.assets = assets
        self.lut = jet_lut()
        self.palette = self.lut.ravel().tolist()

    def add(self, png: bytes) -> str:
        name = f"{PICTURES}{hashlib.sha1(png).hexdigest()[:20]}.png"
        self.assets.setdefault(name, png)
        return name

    @staticmethod
    def decode(png: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(png)) as image:
            return np.asarray(image)

    @staticmethod
    def size(png: bytes) -> tuple[int, int]:
        """(height, width) from the PNG's header, without decoding it."""
        with Image.open(io.BytesIO(png)) as image:
            return image.height, image.width

    def colour(self, unit: np.ndarray) -> str:
        """A map scaled to [0, 1] as a PNG of palette indices 0-255 (a third of an RGB PNG to encode)."""
        image = Image.fromarray(_indices(unit), mode="L").convert("P")
        image.putpalette(self.palette)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)  # maps are smooth: level 1 is as small, and faster
        return self.add(buffer.getvalue())

    def colour_thumbnail(self, png: bytes, vmin: float, vmax: float, low: float, high: float) -> str:
        """A stored map (grey 0..255 spanning [vmin, vmax]) on the colour scale [low, high]: each grey
        level's colour is the one ``colour`` gives its value, put in the PNG's palette."""
        grey = np.arange(256, dtype=np.float64) / 255.0
        indices = _indices(unit_range(vmin + grey * (vmax - vmin), low, high))
        coloured = with_palette(png, self.lut[indices].tobytes())
        if coloured is None:  # not a plain 8-bit grey PNG: decode and colour it
            return self.colour(unit_range(vmin + self.decode(png).astype(np.float64) / 255.0 * (vmax - vmin), low, high))
        return self.add(coloured)

    def colour_bar(self) -> str:
        return self.colour(np.repeat(np.linspace(0.0, 1.0, 256)[None], 12, axis=0))


def _indices(unit: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def thumbnail_values(thumbnail: ThumbnailRow) -> np.ndarray:
    """The map's values back from its 8-bit thumbnail (0..255 spans [vmin, vmax])."""
    grey = Painter.decode(thumbnail.png).astype(np.float64) / 255.0
    low, high = thumbnail.vmin or 0.0, thumbnail.vmax or 0.0
    return low + grey * (high - low)


def unit_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` scaled so that [low, high] spans [0, 1] (all zero for an empty range)."""
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def paint_figures(report: Report, assets: dict[str, bytes]) -> list[Figure]:
    """The paper's figures and the histograms as SVG files (``charts``: the data of ``report --png``'s
    figures, drawn by the template ``chart.svg.j2``, without matplotlib)."""
    from alignbench.html_report.render import render_chart

    figures = []
    for chart in figure_charts(report):
        name = f"figures/{chart.name}.svg"
        assets[name] = render_chart(chart).encode("utf-8")
        figures.append(Figure(name, FIGURE_CAPTIONS.get(chart.name, "")))
    return figures
