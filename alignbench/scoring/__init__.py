"""The write side: a score request becomes a stored run.

- ``scorer``: :class:`ScoreRequest` / :class:`ScoreResult` and :func:`score`, the one entry point;
- ``compute``: a run's images explained and scored, rows written;
- ``centre_bias``: the dataset's model-free reference run;
- ``study``: a grid of score requests, as data (parse, run, status).
"""

from __future__ import annotations

from alignbench.scoring.scorer import (
    DEFAULT_DATASET,
    DEFAULT_EXPLAINER,
    DEFAULT_MODEL,
    PROTOCOLS,
    ScoreRequest,
    ScoreResult,
    parse_metrics,
    score,
    trained_request,
)

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
