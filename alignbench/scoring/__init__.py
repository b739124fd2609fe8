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

from alignbench.scoring.request import (
    DEFAULT_DATASET,
    DEFAULT_EXPLAINER,
    DEFAULT_MODEL,
    PROTOCOLS,
    ScoreRequest,
    ScoreResult,
    parse_metrics,
)
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
