"""The HTML report's pictures: stored thumbnails turned into palette PNGs, and the paper's figures.

Colours: maps are drawn with the colour map ``explain`` uses for its overlays (jet), as 8-bit PNGs
whose palette is the colour map, and overlaid on the picture by the page itself at the weight
``explain`` blends them with (CSS opacity, ``render.OVERLAY_ALPHA``: the browser blends exactly as
``explain`` does, with no second file per map). In a gallery row the model maps of every run share
one colour scale (from the lowest to the highest value among them), so a weaker map looks weaker;
the human map and the centre-bias map, in other units, each span their own range.

Every picture is named by a hash of its bytes (so a rewrite of the report can skip it) and added to
the page's ``assets`` once. matplotlib is imported only when a page with figures or galleries is
painted.
"""

from __future__ import annotations

import hashlib
import io
import tempfile

import numpy as np
from PIL import Image

from alignbench.analysis.plots import write_pngs
from alignbench.analysis.report import Report
from alignbench.html_report.page import Figure
from alignbench.store.tables import Thumbnail

COLOUR_MAP = "jet"  # explain's overlays (alignbench.explainers._files)
PICTURES = "images/"  # where the pictures go, each named by a hash of its bytes (so a rewrite can skip it)
FIGURE_CAPTIONS = {
    "fig2_dcls_vs_baseline.png": "Fig. 2 — DCLS against baseline per architecture; above the line y = x, DCLS scores higher.",
    "fig3_explainers.png": "Fig. 3 — each architecture's score per explainer, with and without DCLS.",
    "fig4_parameters.png": "Fig. 4 — the baselines' parameter count against their score, with Pearson's r and Spearman's ρ.",
    "histograms.png": "The per-image values of each run.",
}


class Painter:
    """Turns stored thumbnails into the report's pictures: maps as palette PNGs, each file once."""

    def __init__(self, assets: dict[str, bytes]) -> None:
        from matplotlib import colormaps  # matplotlib's import is slow: only when a page is painted

        self.assets = assets
        lut = np.rint(colormaps[COLOUR_MAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
        self.palette = lut.ravel().tolist()

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
        image = Image.fromarray(np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").convert("P")
        image.putpalette(self.palette)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)  # maps are smooth: level 1 is as small, and faster
        return self.add(buffer.getvalue())

    def colour_bar(self) -> str:
        return self.colour(np.repeat(np.linspace(0.0, 1.0, 256)[None], 12, axis=0))


def thumbnail_values(thumbnail: Thumbnail) -> np.ndarray:
    """The map's values back from its 8-bit thumbnail (0..255 spans [vmin, vmax])."""
    grey = Painter.decode(thumbnail.png).astype(np.float64) / 255.0
    low, high = thumbnail.vmin or 0.0, thumbnail.vmax or 0.0
    return low + grey * (high - low)


def unit_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` scaled so that [low, high] spans [0, 1] (all zero for an empty range)."""
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def paint_figures(report: Report, assets: dict[str, bytes]) -> list[Figure]:
    """The paper's figures and the histograms, drawn by ``plots.write_pngs`` (the same figures as ``report --png``)."""
    figures = []
    with tempfile.TemporaryDirectory() as directory:
        for path in write_pngs(report, directory):
            name = f"figures/{path.name}"
            assets[name] = path.read_bytes()
            figures.append(Figure(name, FIGURE_CAPTIONS.get(path.name, "")))
    return figures
