"""The centre-bias reference: the map, and scoring it into the store as a run compare/report show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from alignbench.analysis.compare import compare
from alignbench.explainers import CENTRE_BIAS, centre_bias_map
from alignbench.scoring.centre_bias import score_centre_bias
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.testing.synthetic import add_run

# float64 and float32 unit roundoffs (tolerance.EPS64 and EPS, written out: this module does not import torch)
EPS64, EPS32 = 2.0**-52, 2.0**-23


def test_map_is_an_isotropic_gaussian_at_the_centre() -> None:
    m = centre_bias_map(6, 8, sigma_frac=0.25)
    assert m.shape == (6, 8) and m.dtype == np.float32
    sigma = 0.25 * 6
    y, x = 0, 7  # a corner: 2.5 rows and 3.5 columns from the centre (2.5, 3.5)
    # float32 at worst: the exponent's ≤ 2 roundings amplified by |exponent| ≤ 5, exp's own and the cast:
    # float32_relative(2·5 + 2) = 12·EPS ≈ 1.4e-6 (was rel=1e-6)
    rel = 12 * EPS32
    assert m[y, x] == pytest.approx(np.exp(-(2.5**2 + 3.5**2) / (2 * sigma**2)), rel=rel)
    assert m.max() == pytest.approx(np.exp(-(0.5**2 + 0.5**2) / (2 * sigma**2)), rel=rel)
    np.testing.assert_array_equal(m, m[::-1, ::-1])  # symmetric about the centre
    np.testing.assert_array_equal(m, m[::-1, :])
    odd = centre_bias_map(5, 5)
    assert odd[2, 2] == 1.0 and odd.argmax() == 12


def test_spearman_of_the_map_only_depends_on_the_distance_to_the_centre() -> None:
    h, w = 224, 224
    yy, xx = np.mgrid[:h, :w]
    squared_distance = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2  # exact: quarter-integers
    for sigma_frac in (0.1, 0.25, 0.5):  # no float32 ties or underflow, whatever sigma
        rho = stats.spearmanr(centre_bias_map(h, w, sigma_frac).ravel(), -squared_distance.ravel()).statistic
        # the same ranks: 1 up to float64 rounding of the n-term rank sums, float32_bound(n + 8, 1, eps=EPS64) (was 1e-12)
        assert rho == pytest.approx(1.0, abs=2 * (h * w + 8) * EPS64)


@pytest.fixture(autouse=True)
def _tiny_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """score_centre_bias reads batches through ``alignbench.datasets.data_loader``: serve _TinyDataset's."""
    import alignbench.scoring.centre_bias

    monkeypatch.setattr(
        alignbench.scoring.centre_bias, "data_loader", lambda dataset, *args, **kwargs: dataset.data_loader(*args, **kwargs)
    )


class _TinyDataset:
    """The part of an alignbench dataset that score_centre_bias reads, with reference maps given."""

    name = "tiny"
    fingerprint = "tiny-fingerprint"
    ceiling = 0.5

    def __init__(self, references: list[np.ndarray]) -> None:
        self.references = references
        self.served: list[list[str]] = []

    def __len__(self) -> int:
        return len(self.references)

    def image_ids(self) -> list[str]:
        return [f"tiny-{i}" for i in range(len(self))]

    def positions(self, *, skip_ids=frozenset(), limit=None) -> list[int]:
        return [i for i in range(len(self) if limit is None else limit) if f"tiny-{i}" not in skip_ids]

    def data_loader(self, preprocessing, protocol, *, batch_size, num_workers, reference_ranks, positions):
        import torch

        assert preprocessing.input_size == (8, 8) and protocol == "aligned" and not reference_ranks
        ids = list(positions)
        self.served.append([f"tiny-{i}" for i in ids])
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            yield {
                "index": torch.tensor(chunk),
                "image_id": [f"tiny-{i}" for i in chunk],
                "reference": torch.stack([torch.from_numpy(self.references[i]) for i in chunk]),
                "label": torch.tensor([7 if i % 2 else -1 for i in chunk]),
            }


def test_scoring_stores_a_reference_run_once(tmp_path: Path) -> None:
    centre = centre_bias_map(8, 8)
    rng = np.random.default_rng(0)
    noise = rng.random((8, 8)).astype(np.float32)
    references = [centre, 1 - centre, np.full((8, 8), 0.3, np.float32), noise]
    dataset = _TinyDataset(references)
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        run_id = score_centre_bias(store, dataset, protocol="aligned", input_size=(8, 8), batch_size=3, num_workers=0)
        assert score_centre_bias(store, dataset, protocol="aligned", input_size=(8, 8), num_workers=0) == run_id
        assert len(dataset.served) == 1  # the second call reads no image
        with store.session() as session:
            (view,) = q.list_runs(session)
            values = q.per_image_scores(session, [run_id])[run_id]
            n_rows, summary = q.summarise(session, run_id, ["spearman"])
    assert (view.model, view.family, view.dcls, view.method, view.params) == (
        CENTRE_BIAS,
        "reference",
        False,
        CENTRE_BIAS,
        '{"sigma_frac":0.25}',
    )
    assert (view.dataset, view.ceiling, view.status, view.n_images) == ("tiny", 0.5, "complete", 4)
    assert n_rows == 4 and summary["spearman"].n_skipped == 1  # the constant map is skipped, not lost
    # float64 rounding of the n-term rank sums, float32_bound(n + 8, 1, eps=EPS64) (was rel=1e-6 and abs=1e-9)
    rank_atol = 2 * (centre.size + 8) * EPS64
    assert values["tiny-0"] == pytest.approx(1.0, abs=rank_atol) and values["tiny-1"] == pytest.approx(-1.0, abs=rank_atol)
    assert values["tiny-3"] == pytest.approx(stats.spearmanr(centre.ravel(), noise.ravel()).statistic, abs=rank_atol)


def test_compare_shows_the_reference_on_the_same_images(tmp_path: Path) -> None:
    dataset = _TinyDataset([centre_bias_map(8, 8) * (1 + 0.1 * i) + np.eye(8, dtype=np.float32) * i for i in range(12)])
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        score_centre_bias(store, dataset, protocol="aligned", input_size=(8, 8), num_workers=0)
        for dcls in (False, True):
            add_run(
                store,
                model="resnet50",
                dcls=dcls,
                values=np.linspace(0.1, 0.4, 10) + 0.05 * dcls,
                indices=range(10),
                dataset="tiny",
                dataset_fingerprint="tiny-fingerprint",
                ceiling=0.5,
                dataset_size=12,
            )
        with store.session() as session:
            reference = q.per_image_scores(session, [1])[1]
    (row,) = compare(url).comparisons
    expected = np.mean([reference[f"tiny-{i}"] for i in range(10)]) / 0.5
    # a float64 mean of 10 values ≤ 1 over a ceiling of 0.5: float32_bound(10 + 2, 2, eps=EPS64)
    assert row.centre_bias == pytest.approx(expected, rel=0, abs=2 * (10 + 2) * 2 * EPS64) and row.centre_bias_n == 10
