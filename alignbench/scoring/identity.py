"""What names a run: :class:`RunIdentity`, the one place its store key is built and its run looked up.

A run is identified by its inputs — model weights, explainer setting, dataset, protocol, metric set
(with any metric parameters) and precision — so the same request twice computes once. The key hashes
the fingerprints of the weights and the data; where a machine has neither (``study status`` on a
laptop), the same identity finds the run by the names instead (:meth:`RunIdentity.find_like`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlmodel import Session

from alignbench.store import queries as q
from alignbench.store.tables import Run


@dataclass(frozen=True)
class RunIdentity:
    model: str  # the model's name, as the store records it
    method: str  # the explainer setting, canonical (``explainer_setting``)
    params: Mapping[str, Any]
    dataset: str
    protocol: str
    metrics: tuple[str, ...]  # sorted, without duplicates
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    precision: str = "fp32"
    dcls: bool = False
    recipe: Mapping[str, Any] | None = None
    init: str | None = None
    model_fingerprint: str | None = None  # None: the weights are not on this machine
    dataset_fingerprint: str | None = None  # None: the dataset's files are not on this machine

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(sorted(set(self.metrics))))

    @classmethod
    def of(
        cls,
        request: Any,
        model: Any,
        method: str,
        params: Mapping[str, Any],
        *,
        dataset_fingerprint: str | None = None,
        model_fingerprint: str | None = None,
    ) -> RunIdentity:
        """The identity of ``request``'s run (a ScoreRequest) for the model ``model`` (its
        ModelIdentity) and the canonical explainer setting; ``model_fingerprint`` defaults to the
        identity's."""
        return cls(
            model=model.name,
            method=method,
            params=dict(params),
            dataset=request.dataset,
            protocol=request.protocol,
            metrics=tuple(request.metrics),
            metric_params=dict(request.metric_params),
            precision=request.precision,
            dcls=bool(model.dcls),
            recipe=getattr(model, "recipe", None),
            init=getattr(model, "init", None),
            model_fingerprint=model_fingerprint or model.fingerprint,
            dataset_fingerprint=dataset_fingerprint,
        )

    @property
    def exact(self) -> bool:
        """Whether the key can be made: both fingerprints are known."""
        return self.model_fingerprint is not None and self.dataset_fingerprint is not None

    def with_model(self, fingerprint: str) -> RunIdentity:
        """The same run for weights with ``fingerprint`` (known more exactly once the model is loaded)."""
        return replace(self, model_fingerprint=fingerprint)

    @property
    def key(self) -> str:
        """The store key: the same inputs always give the same key (``q.run_key``)."""
        if not self.exact:
            raise ValueError("a run key needs the fingerprints of the model's weights and of the dataset")
        # only the parameters of requested metrics count; a metric at its defaults keeps its plain
        # name, so runs stored before metric parameters existed keep their key
        keyed = [f"{m}{q.canonical_json(dict(self.metric_params[m]))}" if self.metric_params.get(m) else m for m in self.metrics]
        return q.run_key(
            self.model_fingerprint, self.method, self.params, self.dataset_fingerprint, self.protocol, keyed, precision=self.precision
        )

    def find(self, session: Session) -> Run | None:
        """The stored run with this identity's key."""
        return q.find_run(session, self.key)

    def find_like(self, session: Session) -> Run | None:
        """The most recently updated run named like this one (model, recipe, init, setting, dataset
        name, protocol, metrics, precision), for a machine that cannot make the key."""
        return q.find_run_like(
            session,
            model=self.model,
            dcls=self.dcls,
            recipe=self.recipe,
            init=self.init,
            method=self.method,
            params=self.params,
            dataset=self.dataset,
            protocol=self.protocol,
            metrics=self.metrics,
            precision=self.precision,
        )
