"""alignbench: how well vision models' explanations align with human attention, with and without DCLS.

The tree is the architecture. Data flows one way, and a package imports only the ones above it
(``tests/test_architecture.py`` holds every module to this map):

1. ``errors``, ``_utils`` — the exceptions and private helpers (caches, paths, threads, lazy
   attributes, class names, precision) that every layer may use; no torch.
2. specs — torch-free data: ``models.specs`` (a frozen spec per model, the DCLS recipes),
   ``models.preprocessing`` (how a model wants its input), ``models._origins``.
3. ``models`` — timm models built from their specs: DCLS conversion, CA-Stream, checkpoints.
4. ``explainers`` — maps from models: the CAM core, pytorch-grad-cam's methods, attention.
5. ``metrics`` — pure functions of maps (Spearman, localisation, faithfulness) with metadata.
6. ``datasets`` — images, reference maps and targets read from their layouts.
7. ``store`` — the SQL store: tables, engine, migrations, named queries.
8. ``distributed`` — the one torchrun layer (ranks, collectives with a timeout, SIGTERM).
9. ``scoring`` (a request becomes a stored run; studies) and ``training`` (trained models and
   their lineage).
10. ``analysis`` — what is stored, compared and summarised (no torch).
11. ``html_report`` — the static HTML report: page model, figures, galleries, thumbnails, templates.
12. ``cli`` — the Typer commands: parse options, call one library function, print.

``testing`` is test support (synthetic stores, a local PostgreSQL, headless Chromium); nothing in
the package imports it.

The public API is small and explicit. Its functions live in modules that import torch; they are
loaded on first use so that store-only work (a cached ``score``, ``compare``, ``report``) never pays
for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._utils.lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = ["__version__", "explain", "load_model", "spearman"]

# public name -> module that defines it (imported lazily, see module docstring)
_LAZY = {
    "load_model": "alignbench.models",
    "explain": "alignbench.explainers",
    "spearman": "alignbench.metrics.spearman",
}

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.explainers import explain
    from alignbench.metrics.spearman import spearman
    from alignbench.models import load_model


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
