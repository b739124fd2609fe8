"""The write side: a score request becomes a stored run.

- ``request``: :class:`ScoreRequest` / :class:`ScoreResult`, torch-free data;
- ``scorer``: :func:`score`, the one entry point (a cached answer never imports torch);
- ``identity``: :class:`RunIdentity`, the run key and how a run is found;
- ``lifecycle``: a run opened, marked running, kept alive (heartbeat) and settled;
- ``compute``: a run's images explained and scored, rows written (imports torch);
- ``centre_bias``: the dataset's model-free reference run;
- ``study``: a grid of score requests, as data (parse, run, status).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._utils.lazy import lazy_attributes
from alignbench.scoring.request import (
    DEFAULT_DATASET,
    DEFAULT_EXPLAINER,
    DEFAULT_MODEL,
    PROTOCOLS,
    ScoreRequest,
    ScoreResult,
    parse_metrics,
)

# The entry points open the store (SQLModel's ORM): loaded on first use, so that a command that
# only builds a request (or lists runs) does not import them.
_LAZY = {"score": "alignbench.scoring.scorer", "trained_request": "alignbench.scoring.scorer"}

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.scoring.scorer import score, trained_request

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_EXPLAINER",
    "DEFAULT_MODEL",
    "PROTOCOLS",
    "ScoreRequest",
    "ScoreResult",
    "parse_metrics",
    "score",
    "trained_request",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
