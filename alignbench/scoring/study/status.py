"""A study's cells as the store has them (``alignbench study status``): done, partial or missing, with
image counts; nothing is created or computed, and no torch for registry models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignbench.datasets import open_dataset
from alignbench.errors import DatasetError, ModelError
from alignbench.explainers import explainer_setting
from alignbench.models import model_identity
from alignbench.scoring import ScoreRequest
from alignbench.scoring.identity import RunIdentity
from alignbench.scoring.study.parse import describe
from alignbench.store import StoreMissing, open_store_to_read
from alignbench.store import queries as q
from alignbench.store.liveness import shown_status


@dataclass(frozen=True)
class CellStatus:
    """One cell of a study as the store has it."""

    request: ScoreRequest
    label: str
    state: str  # done | partial | missing
    stored: int  # rows among the images the cell asks for
    wanted: int | None  # images the cell asks for (None: its dataset is not on this machine)
    run_id: int | None
    run_status: str | None  # the stored run's status as every reader shows it (a running run whose process is gone: interrupted)
    exact: bool  # matched by run key; False: by model name and settings (weights or data not here)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.request.model.name,
            "dcls": self.request.model.dcls,
            "tag": self.request.model.tag,
            "explainer": self.request.explainer,
            "explainer_params": self.request.explainer_params,
            "dataset": self.request.dataset,
            "protocol": self.request.protocol,
            "precision": self.request.precision,
            "state": self.state,
            "stored": self.stored,
            "wanted": self.wanted,
            "run_id": self.run_id,
            "run_status": self.run_status,
            "matched_by": "key" if self.exact else "name",
        }


@dataclass(frozen=True)
class _Plan:
    """What a cell looks for in the store: its run, by key when this machine can make it exactly."""

    request: ScoreRequest
    run: RunIdentity | None  # not exact where the weights or the dataset are not here (matched by name); None: a checkpoint not here
    wanted: int | None  # images the cell asks for (None: its dataset is not on this machine)

    @property
    def key(self) -> str | None:
        return self.run.key if self.run is not None and self.run.exact else None


def study_status(requests: Sequence[ScoreRequest], *, db: str | None = None) -> list[CellStatus]:
    """done / partial / missing for every cell, from the store alone (nothing is created or computed).

    A cell is matched to its run by the run key ``score`` would use; the rows of runs not marked
    complete are counted (a complete run was counted when it was marked). Where this machine cannot make
    that key exactly — the model's weights or the dataset's files are not here, so their fingerprints
    are not known — the run is matched by what names it instead: model name, DCLS recipe and init,
    explainer setting, dataset name, protocol, metric set and precision (``exact`` False).
    """
    plans = _plans(requests)
    try:
        store = open_store_to_read(db)
    except StoreMissing:
        store = None
    try:
        session = store.session() if store is not None else None
        runs = q.runs_by_key(session, [p.key for p in plans if p.key]) if session is not None else {}
        return [_cell_status(plan, runs, session) for plan in plans]
    finally:
        if store is not None:
            session.close()
            store.close()


def _plans(requests: Sequence[ScoreRequest]) -> list[_Plan]:
    datasets: dict[tuple[str, Path | None, float | None], Any] = {}
    plans = []
    for request in requests:
        where = (request.dataset, request.data_dir, request.fixation_sigma)
        if where not in datasets:
            try:
                datasets[where] = open_dataset(request.dataset, request.data_dir, download=False, fixation_sigma=request.fixation_sigma)
            except DatasetError:
                datasets[where] = None  # not on this machine: matched by name
        dataset = datasets[where]
        try:
            identity = model_identity(request.model)
        except ModelError:  # load_study(files=False) kept it: a checkpoint that is not on this machine
            plans.append(_Plan(request, None, None))
            continue
        method, params = explainer_setting(request.explainer, **request.explainer_params)
        run = RunIdentity.of(request, identity, method, params, dataset_fingerprint=dataset.fingerprint if dataset else None)
        if not identity.weights_on_disk:
            run = replace(run, model_fingerprint=None)
        wanted = None if dataset is None else (min(len(dataset), request.limit) if request.limit else len(dataset))
        plans.append(_Plan(request, run, wanted))
    return plans


def _cell_status(plan: _Plan, runs: dict[str, Any], session: Any) -> CellStatus:
    request, key, wanted = plan.request, plan.key, plan.wanted
    if plan.run is None:
        return CellStatus(request, f"{describe(request)} (its checkpoint is not on this machine)", "missing", 0, None, None, None, False)
    run = runs.get(key) if key else None
    if run is None and key is None and session is not None:
        run = plan.run.find_like(session)
    need = wanted if wanted is not None else (min(run.n_images, request.limit or run.n_images) if run else None)
    stored = 0
    if run is not None and run.status == "complete" and need is not None:
        # marked complete once its rows were counted (score, merge): every image is there, and
        # counting 52,224 index entries per run again was most of a status over a finished study
        stored = need
    elif run is not None:
        stored = q.count_rows(session, run.id, max_index=request.limit)
    state = "missing" if run is None or stored == 0 else ("done" if need is not None and stored >= need else "partial")
    status = None
    if run is not None:
        status = shown_status(run.status, pid=run.pid, host=run.host, heartbeat_at=run.heartbeat_at, updated_at=run.updated_at)
    return CellStatus(request, describe(request), state, stored, need, run.id if run else None, status, key is not None)
