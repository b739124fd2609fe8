"""alignbench: how well vision models' explanations align with human attention, with and without DCLS.

The public API is small and explicit. Its functions live in modules that import torch; they are
loaded on first use so that store-only work (a cached ``score``, ``compare``, ``report``) never pays
for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._lazy import lazy_attributes

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
