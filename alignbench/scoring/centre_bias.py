"""Scoring the centre-bias reference (``alignbench.explainers`` ``centre_bias_map``) into the store as a run.

``alignbench score`` calls :func:`score_centre_bias` after each computed run on a dataset with
reference maps, so compare and report always have the model-free reference on the same images and
stay store-only. On a fixation dataset the reference is the dataset's own centre bias (each item's
``baseline``: the leave-one-out average fixation density of the other images, at the stimulus size),
scored with Spearman and the saliency benchmark's eight metrics (its information gain is 0 by
definition); elsewhere it is the Gaussian centre-bias map, scored with Spearman. Imports torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from alignbench._utils.cache import sha256_text
from alignbench.datasets import data_loader
from alignbench.distributed import SINGLE, Ranks, my_share
from alignbench.errors import DatasetError
from alignbench.explainers import CENTRE_BIAS, CENTRE_BIAS_FAMILY, CENTRE_BIAS_SIGMA_FRAC, centre_bias_map
from alignbench.metrics import FIXATION_DEFAULT_METRICS, fixation
from alignbench.metrics.constancy import constant_map_reason, mask_undefined
from alignbench.metrics.spearman import spearman
from alignbench.models.preprocessing import Preprocessing
from alignbench.scoring.identity import RunIdentity
from alignbench.scoring.lifecycle import open_run, settle_status
from alignbench.store import Store
from alignbench.store import queries as q
from alignbench.store.tables import Run

# On a fixation dataset the reference is the dataset's own centre bias (its items' ``baseline``).
LEAVE_ONE_OUT = "leave-one-out"


class CentreBiasIdentity:
    """What q.upsert_model records for the reference (the attributes of an alignbench.models.ModelIdentity)."""

    def __init__(self, sigma_frac: float, input_size: tuple[int, int], *, fixations: bool = False) -> None:
        self.name = CENTRE_BIAS
        self.dcls = False
        self.recipe = None
        self.init = None
        if fixations:
            self.weights_source = "model-free: the dataset's centre bias, the average fixation density of the other images (leave-one-out)"
        else:
            self.weights_source = f"model-free: isotropic Gaussian at the image centre, sigma = {sigma_frac} × shorter side"
        self.checkpoint_sha256 = None
        kind = (LEAVE_ONE_OUT,) if fixations else (repr(float(sigma_frac)),)
        self.fingerprint = sha256_text(CENTRE_BIAS, *kind, f"{input_size[0]}x{input_size[1]}")


def _reference_run(store: Store, dataset: Any, protocol: str, input_size: tuple[int, int], sigma_frac: float) -> tuple[int, bool]:
    """The id of the reference's run on ``dataset`` (created when new), and whether an older scorer
    wrote its rows (those with a value are then computed again: ``q.needs_recheck``)."""
    fixations = getattr(dataset, "has_fixations", False)
    model = CentreBiasIdentity(sigma_frac, input_size, fixations=fixations)
    identity = RunIdentity(
        model=model.name,
        method=CENTRE_BIAS,
        params={"baseline": LEAVE_ONE_OUT} if fixations else {"sigma_frac": float(sigma_frac)},
        dataset=dataset.name,
        protocol=protocol,
        metrics=FIXATION_DEFAULT_METRICS if fixations else ("spearman",),
        model_fingerprint=model.fingerprint,
        dataset_fingerprint=dataset.fingerprint,
    )
    with store.session(write=True) as session:
        run = open_run(session, identity, model=model, dataset=dataset, param_count=0, family=CENTRE_BIAS_FAMILY)
        recheck = q.needs_recheck(run) and bool(q.scored_image_ids(session, run.id))
        if not recheck:
            q.stamp_scorer(session, run)
        session.commit()
        return run.id, recheck


def _rows(batch: dict[str, Any], centre_maps: dict[tuple[int, int], torch.Tensor], sigma_frac: float) -> list[dict[str, Any]]:
    """One batch's rows: the centre-bias map's Spearman ρ against each reference map."""
    reference = batch["reference"].float()
    size = tuple(reference.shape[-2:])
    if size not in centre_maps:
        centre_maps[size] = torch.from_numpy(centre_bias_map(size[0], size[1], sigma_frac))
    centre = centre_maps[size].expand(reference.shape[0], *size)
    values = spearman(centre, reference)
    # the dataset's verdict on each reference (constant in its file, or up to rounding after preprocessing)
    constant = batch.get("reference_undefined") or constant_map_reason(reference, "the reference map")
    why = mask_undefined({"spearman": values}, {"reference": constant})["spearman"]
    rows = []
    for i, image_id in enumerate(batch["image_id"]):
        value = float(values[i])
        label = int(batch["label"][i])
        rows.append(
            {
                "image_index": int(batch["index"][i]),
                "image_id": image_id,
                "target": label if label >= 0 else None,
                "prediction": None,
                "confidence": None,
                "spearman": value,
                "skip_reason": None if value == value else f"spearman: {why[i] or 'undefined'}",
            }
        )
    return rows


def _fixation_scores(baseline: np.ndarray, batch: dict[str, Any], i: int) -> dict[str, float]:
    """The fixation metrics and Spearman of the dataset's centre bias for image ``i``, at the stimulus
    size (the baseline is given there: nothing is resized). Its information gain is 0 by definition."""
    fixations = np.asarray(batch["fixations"][i], dtype=np.float64).reshape(-1, 2)
    if len(fixations) == 0:
        return dict.fromkeys(FIXATION_DEFAULT_METRICS, math.nan)
    xs, ys = fixations[:, 0], fixations[:, 1]
    other = np.asarray(batch["other_fixations"][i], dtype=np.float64).reshape(-1, 2)
    density = np.asarray(batch["density"][i])
    return {
        "spearman": float(spearman(torch.as_tensor(baseline, dtype=torch.float32)[None], torch.as_tensor(density)[None]).item()),
        "nss": fixation.nss(baseline, xs, ys),
        "auc-judd": fixation.auc_judd(baseline, xs, ys),
        "auc-borji": fixation.auc_borji(baseline, xs, ys),
        "sauc": fixation.sauc(baseline, xs, ys, other[:, 0], other[:, 1]),
        "cc": fixation.cc(baseline, density),
        "kl": fixation.kl(baseline, density),
        "sim": fixation.sim(baseline, density),
        "ig": fixation.information_gain(baseline, baseline, xs, ys),
    }


def _fixation_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """One batch of a fixation dataset: the rows of its centre bias (the items' ``baseline``)."""
    rows = []
    for i, image_id in enumerate(batch["image_id"]):
        baseline = np.asarray(batch["baseline"][i], dtype=np.float64)
        scores = _fixation_scores(baseline, batch, i)
        if not len(batch["fixations"][i]):
            why = {metric: "the image has no fixations" for metric in scores}
        else:
            constant = constant_map_reason(torch.as_tensor(baseline)[None], "the centre bias")[0]
            why = {metric: constant or "undefined (NaN or ±inf in the centre bias or the density)" for metric in scores}
        label = int(batch["label"][i])
        row = {
            "image_index": int(batch["index"][i]),
            "image_id": image_id,
            "target": label if label >= 0 else None,
            "prediction": None,
            "confidence": None,
        }
        row.update({q.metric_column(metric): value for metric, value in scores.items()})
        reasons = [f"{metric}: {why[metric]}" for metric, value in scores.items() if value != value]
        row["skip_reason"] = "; ".join(reasons) or None
        rows.append(row)
    return rows


def score_centre_bias(
    store: Store,
    dataset: Any,
    *,
    protocol: str,
    input_size: tuple[int, int] = (224, 224),
    sigma_frac: float = CENTRE_BIAS_SIGMA_FRAC,
    limit: int | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    ranks: Ranks = SINGLE,
) -> int:
    """Score the centre-bias map against ``dataset``'s reference maps into ``store``; returns the run id.

    ``dataset`` is an opened alignbench dataset (``open_dataset``). Its reference maps are read at
    ``input_size`` through ``protocol``, exactly as a model's run reads them. Images already stored
    are skipped, so a second call computes nothing and an interrupted one resumes. Under torchrun
    (``ranks``), each rank scores its share of the missing images.
    """
    if not getattr(dataset, "has_reference", True):  # a stand-in without the attribute has them
        raise DatasetError(f"dataset {dataset.name!r} has no reference maps: the centre-bias map has nothing to be scored against")
    wanted = len(dataset) if limit is None else min(limit, len(dataset))
    run_id, recheck = _reference_run(store, dataset, protocol, input_size, sigma_frac)

    def missing() -> list[int]:
        with store.session() as session:
            done = q.scored_image_ids(session, run_id)
            return dataset.positions(skip_ids=done - q.rows_to_recheck(session, run_id) if recheck else done, limit=wanted)

    positions = my_share(ranks, missing)
    if positions:
        # The reference maps only: model mean/std are irrelevant, the input size fixes the map size.
        preprocessing = Preprocessing(input_size=tuple(input_size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        batches = data_loader(
            dataset,
            preprocessing,
            protocol,
            batch_size=batch_size,
            num_workers=num_workers,
            reference_ranks=False,
            positions=positions,
        )
        centre_maps: dict[tuple[int, int], torch.Tensor] = {}
        for batch in batches:
            rows = _fixation_rows(batch) if "baseline" in batch else _rows(batch, centre_maps, sigma_frac)
            with store.session(write=True) as session:
                q.insert_scores(session, run_id, rows, replace=recheck)
                session.commit()
    if recheck and ranks.is_main:
        with store.session(write=True) as session:
            q.stamp_scorer(session, session.get(Run, run_id))
            session.commit()
    settle_status(store, run_id)
    return run_id
