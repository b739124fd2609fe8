"""``score`` on a fixation dataset (issue 22): the default metric set, NULL with its reason for an image
without fixations, the dataset's centre bias as the reference run (IG 0), compare showing it for a
lower-is-better metric, and the refusal of a fixation metric on a dataset without fixations.

The fixation datasets are another helper's (alignbench/datasets); the dataset here is a stand-in that
serves batches laid out as their contract says (CONTRACT22), through the loaders ``score`` calls.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from alignbench.errors import MetricError
from alignbench.explainers import CENTRE_BIAS
from alignbench.metrics import FIXATION_DEFAULT_METRICS
from alignbench.metrics import fixation as fx
from alignbench.models import ModelRequest
from alignbench.scoring import ScoreRequest, score
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.store.tables import ImageScore

TINY = ModelRequest("test_convnext", pretrained=False)
SIZES = [(40, 60), (33, 33), (50, 20), (64, 48)]  # stimulus (height, width); image 2 has no fixations


def _density(fixations: np.ndarray, size: tuple[int, int], rng) -> np.ndarray:
    d = np.full(size, 1e-6, dtype=np.float32)
    for x, y in fixations:
        d[int(y), int(x)] += 1
    d += rng.random(size).astype(np.float32) * 0.01
    return d / d.sum()


class _FixationDataset:
    """What score reads of an opened dataset, with fixation batches per CONTRACT22."""

    name = "fixation-stand-in"
    fingerprint = "fixation-stand-in-fingerprint"
    ceiling = None
    location = None
    has_reference = True
    has_boxes = False
    has_fixations = True

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.fixations = [
            np.zeros((0, 2)) if k == 2 else np.stack([rng.uniform(0, w, 7), rng.uniform(0, h, 7)], axis=1) for k, (h, w) in enumerate(SIZES)
        ]
        self.density = [_density(f, size, rng) for f, size in zip(self.fixations, SIZES)]
        self.baseline = [_density(np.zeros((0, 2)), size, rng) + 0 for size in SIZES]

    def __len__(self) -> int:
        return len(SIZES)

    def positions(self, *, skip_ids=frozenset(), limit=None) -> list[int]:
        return [i for i in range(len(self) if limit is None else limit) if f"img-{i}" not in skip_ids]

    def check_labels(self, num_classes: int) -> None:
        pass

    def check_files(self, positions) -> None:
        pass

    def others(self, k: int) -> np.ndarray:
        h, w = SIZES[k]
        parts = [f * np.array([w / SIZES[j][1], h / SIZES[j][0]]) for j, f in enumerate(self.fixations) if j != k]
        return np.concatenate(parts)

    def data_loader(self, preprocessing, protocol, *, batch_size, positions=None, skip_ids=frozenset(), limit=None, **_):
        ids = list(positions) if positions is not None else self.positions(skip_ids=skip_ids, limit=limit)
        size = tuple(preprocessing.input_size)
        batches = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            reference = torch.stack(
                [
                    torch.nn.functional.interpolate(torch.from_numpy(self.density[k])[None, None], size=size, mode="bilinear")[0, 0]
                    for k in chunk
                ]
            )
            batches.append(
                {
                    "index": torch.tensor(chunk),
                    "image_id": [f"img-{k}" for k in chunk],
                    "image": torch.randn(len(chunk), 3, *size, generator=torch.Generator().manual_seed(start)),
                    "label": torch.full((len(chunk),), -1),
                    "reference": reference,
                    "reference_undefined": [None] * len(chunk),
                    "stimulus_size": [SIZES[k] for k in chunk],
                    "fixations": [self.fixations[k] for k in chunk],
                    "density": [self.density[k] for k in chunk],
                    "baseline": [self.baseline[k] for k in chunk],
                    "other_fixations": [self.others(k) for k in chunk],
                }
            )
        return len(ids), batches

    def loader(self, *args, **kwargs):
        return self.data_loader(*args, **kwargs)[1]


class _Loader(list):
    """A list of batches with the DataLoader's ``dataset`` length that compute reads."""

    def __init__(self, n: int, batches: list) -> None:
        super().__init__(batches)
        self.dataset = range(n)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> _FixationDataset:
    import alignbench.scoring.centre_bias
    import alignbench.scoring.compute
    import alignbench.scoring.scorer

    dataset = _FixationDataset()
    monkeypatch.setattr(alignbench.scoring.scorer, "open_dataset", lambda name, data_dir=None, **options: dataset)
    monkeypatch.setattr(alignbench.scoring.compute, "data_loader", lambda ds, *a, **k: _Loader(*ds.data_loader(*a, **k)))
    monkeypatch.setattr(alignbench.scoring.centre_bias, "data_loader", lambda ds, *a, **k: ds.loader(*a, **k))
    return dataset


def _rows(url: str, run_id: int) -> dict[str, ImageScore]:
    from sqlmodel import select

    with open_store(url) as store, store.session() as session:
        return {row.image_id: row for row in session.exec(select(ImageScore).where(ImageScore.run_id == run_id)).all()}


def test_score_on_a_fixation_dataset_defaults_to_the_fixation_metrics(stand_in: _FixationDataset, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    result = score(ScoreRequest(model=TINY, dataset="fixation-stand-in", workers=0, batch_size=3), db=url)
    assert set(result.metrics) == set(FIXATION_DEFAULT_METRICS)
    rows = _rows(url, result.run_id)
    assert len(rows) == 4 and result.n_scored == 3
    empty = rows["img-2"]
    assert all(getattr(empty, q.metric_column(m)) is None for m in FIXATION_DEFAULT_METRICS)
    assert all(f"{m}: the image has no fixations" in empty.skip_reason for m in FIXATION_DEFAULT_METRICS)
    for image_id in ("img-0", "img-1", "img-3"):
        row = rows[image_id]
        assert row.skip_reason is None
        for column in ("auc_judd", "auc_borji", "sauc", "sim"):
            assert 0.0 <= getattr(row, column) <= 1.0
        assert -1.0 <= row.cc <= 1.0 and row.kl >= -1e-9

    with open_store(url) as store, store.session() as session:
        (reference,) = [v for v in q.list_runs(session) if v.method == CENTRE_BIAS]
    assert set(reference.metrics.split(",")) == set(FIXATION_DEFAULT_METRICS)
    centre = _rows(url, reference.run_id)
    assert centre["img-2"].ig is None and "the image has no fixations" in centre["img-2"].skip_reason
    for k in (0, 1, 3):
        row, f = centre[f"img-{k}"], stand_in.fixations[k]
        assert row.ig == 0.0  # the baseline against itself
        base = stand_in.baseline[k].astype(np.float64)
        assert row.kl == pytest.approx(fx.kl(base, stand_in.density[k]), abs=1e-12)
        assert row.auc_judd == pytest.approx(fx.auc_judd(base, f[:, 0], f[:, 1]), abs=1e-12)
        assert row.sauc == pytest.approx(fx.sauc(base, f[:, 0], f[:, 1], *stand_in.others(k).T), abs=1e-12)

    from alignbench.analysis.compare import compare

    compared = compare(url, metric="kl")
    (row,) = compared.comparisons
    means = [centre[f"img-{k}"].kl for k in (0, 1, 3)]
    assert row.centre_bias == pytest.approx(sum(means) / 3, abs=1e-12)
    (group,) = compared.groups
    ranked = [run.score for run in group.ranking]
    assert len(ranked) == 2 and ranked == sorted(ranked)  # kl: the lowest first
    assert group.scale == "mean kl, lower is better"


def test_a_fixation_metric_on_a_dataset_without_fixations_is_refused_before_any_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(MetricError) as raised:
        score(ScoreRequest(model=TINY, dataset="sample", metrics=("spearman", "nss"), workers=0), db=url)
    message = str(raised.value)
    assert "'nss' needs eye-tracking fixations" in message and "\n" not in message
    assert not (tmp_path / "store.db").exists()


def test_cc_kl_sim_score_the_reference_map_of_any_dataset(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    result = score(ScoreRequest(model=TINY, dataset="sample", metrics=("cc", "kl", "sim"), workers=0, limit=2), db=url)
    assert result.n_scored == 2
    assert all(value is not None and math.isfinite(value) for value in result.metrics.values())
