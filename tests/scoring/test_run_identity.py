"""RunIdentity builds the one run key and finds a run by it or by name; the lifecycle opens and settles runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from alignbench.scoring.identity import RunIdentity
from alignbench.scoring.lifecycle import mark_running, open_run, settle_status
from alignbench.scoring.request import ScoreRequest
from alignbench.store import open_store
from alignbench.store import queries as q


def _identity(**changes) -> RunIdentity:
    fields = dict(
        model="resnet50",
        method="gradcam",
        params={"layer": "x"},
        dataset="sample",
        protocol="aligned",
        metrics=("spearman", "deletion"),
        model_fingerprint="m" * 64,
        dataset_fingerprint="d" * 64,
    )
    return RunIdentity(**{**fields, **changes})


class _Dataset:
    name, fingerprint, ceiling, location = "sample", "d" * 64, 0.5, None

    def __len__(self) -> int:
        return 3


def test_the_key_is_the_stored_formula() -> None:
    identity = _identity(metric_params={"deletion": {"steps": 5}}, precision="bf16")
    expected = q.run_key("m" * 64, "gradcam", {"layer": "x"}, "d" * 64, "aligned", ['deletion{"steps":5}', "spearman"], precision="bf16")
    assert identity.key == expected
    assert identity.metrics == ("deletion", "spearman")  # sorted: the order asked does not change the run


def test_a_request_s_identity_is_its_key() -> None:
    request = ScoreRequest(model="resnet50", metrics=("spearman",), metric_params={"spearman": {}})
    model = SimpleNamespace(name="resnet50", dcls=False, fingerprint="m" * 64)
    key = RunIdentity.of(request, model, "gradcam", {"layer": "x"}, dataset_fingerprint="d" * 64).key
    assert key == _identity(metrics=("spearman",)).key


def test_a_key_needs_both_fingerprints() -> None:
    assert not _identity(dataset_fingerprint=None).exact
    with pytest.raises(ValueError):
        _identity(model_fingerprint=None).key  # noqa: B018 (the property raises)
    assert _identity(model_fingerprint=None).with_model("x" * 64).exact


def test_a_run_is_opened_once_found_by_key_and_by_name_and_settled(tmp_path) -> None:
    identity = _identity()
    model = SimpleNamespace(name="resnet50", dcls=False, recipe=None, init=None, fingerprint="m" * 64, weights_source="test")
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        with store.session(write=True) as session:
            run = open_run(session, identity, model=model, dataset=_Dataset(), param_count=1, family="resnet")
            mark_running(session, run, device="cpu", versions={"alignbench": "test"})
            session.commit()
            assert open_run(session, identity, model=model, dataset=_Dataset()).id == run.id
        with store.session() as session:
            assert identity.find(session).id == run.id
            assert _identity(model_fingerprint=None, dataset_fingerprint=None).find_like(session).id == run.id
            assert identity.find(session).status == "running" and identity.find(session).pid is not None
        assert settle_status(store, run.id) == "partial"
        with store.session(write=True) as session:
            q.insert_scores(session, run.id, [{"image_index": i, "image_id": str(i), "spearman": 0.5} for i in range(3)])
            session.commit()
        assert settle_status(store, run.id) == "complete"
