"""What ``score`` is asked and what it answers: :class:`ScoreRequest` and :class:`ScoreResult`, torch-free data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignbench._utils.precision import DEFAULT_PRECISION
from alignbench.datasets import PROTOCOLS
from alignbench.models import ModelRequest

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_EXPLAINER = "threshold-gradcam"
DEFAULT_DATASET = "sample"

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_EXPLAINER",
    "DEFAULT_MODEL",
    "PROTOCOLS",
    "ProgressCallback",
    "ScoreRequest",
    "ScoreResult",
    "parse_metrics",
]


@dataclass(frozen=True)
class ScoreRequest:
    model: ModelRequest = field(default_factory=lambda: ModelRequest(DEFAULT_MODEL))  # a name is taken too
    explainer: str = DEFAULT_EXPLAINER
    explainer_params: dict[str, Any] = field(default_factory=dict)
    dataset: str = DEFAULT_DATASET
    data_dir: Path | None = None
    fixation_sigma: float | None = None  # eye-tracking datasets' density blur (px); None: the dataset default
    protocol: str = "aligned"
    # None: the dataset's default (alignbench.metrics.default_metrics): spearman, and on a fixation
    # dataset the saliency benchmark's eight metrics with it
    metrics: tuple[str, ...] | None = None
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"deletion": {"steps": 50}}
    limit: int | None = None
    batch_size: int = 16
    force: bool = False
    device: str = "auto"
    workers: int | None = None  # DataLoader workers; None: the dataset's default (cores - 1, at most 4)
    precision: str = DEFAULT_PRECISION  # the forward passes' (alignbench._utils.precision); part of the run key unless fp32
    retag: bool = False  # model.tag may be moved from another model (a tag names one model)

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelRequest):
            object.__setattr__(self, "model", ModelRequest(str(self.model)))


@dataclass
class ScoreResult:
    run_id: int
    model: str
    dcls: bool
    explainer: str
    explainer_params: dict[str, Any]
    dataset: str
    protocol: str
    n_images: int
    n_scored: int
    n_skipped: int
    mean_spearman: float | None
    alignment_score: float | None
    cached: bool
    metrics: dict[str, float | None]
    status: str
    computed_images: int = 0
    seconds: float = 0.0
    weights_source: str = ""
    device: str | None = None
    ca_stream: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[int, int], None]  # (images done in this process, images to do)


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """``spearman,pointing-game`` → ('spearman', 'pointing-game'); order kept, duplicates dropped."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    seen: dict[str, None] = {}
    for part in parts:
        name = part.strip().lower()
        if name:
            seen.setdefault(name, None)
    return tuple(seen)
