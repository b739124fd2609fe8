"""``train`` under torchrun joins the launch as scoring does (alignbench.distributed): the process group
with the collective timeout, and torchrun's SIGTERM (another rank failed) as one line naming what is kept.
torch.distributed is faked: the real two-process run is tests/training/test_train_ddp.py."""

from __future__ import annotations

import atexit
import os
import signal
import time

import pytest
import torch.distributed as dist

from alignbench import distributed
from alignbench.errors import AlignbenchError, TrainingError
from alignbench.models import ModelRequest
from alignbench.training import TrainRequest, _train, train


@pytest.fixture
def rank_one_of_two(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """torchrun's environment for rank 1 of 2, a fake process group (its init_process_group calls)."""
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    calls: list[dict] = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(atexit, "register", lambda function: function)
    monkeypatch.setattr(distributed, "_joined", [])
    monkeypatch.setattr(distributed, "_handler_owner", [])
    previous = signal.getsignal(signal.SIGTERM)
    yield calls
    signal.signal(signal.SIGTERM, previous)


def _request(tmp_path) -> TrainRequest:
    return TrainRequest(
        model=ModelRequest("test_efficientnet", pretrained=False), data=tmp_path / "data", out=tmp_path / "out", steps=1, device="cpu"
    )


def test_training_joins_with_the_collective_timeout(rank_one_of_two: list[dict], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def setup(request, ranks, device, progress, db):
        assert (ranks.rank, ranks.world_size, ranks.backend, str(device)) == (1, 2, "gloo", "cpu")
        assert signal.getsignal(signal.SIGTERM) is distributed._stopped_by_torchrun
        raise AlignbenchError("joined")

    monkeypatch.setattr(_train, "_setup", setup)
    with pytest.raises(AlignbenchError, match="joined"):
        train(_request(tmp_path))
    assert rank_one_of_two == [{"backend": "gloo", "timeout": distributed.COLLECTIVE_TIMEOUT}]


def test_sigterm_during_training_is_one_line_naming_the_checkpoints(
    rank_one_of_two: list[dict], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def setup(request, ranks, device, progress, db):
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun stopping this rank
        time.sleep(5)  # the handler raises before this returns

    monkeypatch.setattr(_train, "_setup", setup)
    with pytest.raises(AlignbenchError) as stopped:
        train(_request(tmp_path))
    out = (tmp_path / "out").resolve()
    assert stopped.value.message == (
        "rank 1 stopped: torchrun ends every process when one fails (see its report); "
        f"the checkpoints written to {out} are kept; continue with --resume {out / 'last.pt'} (same options)"
    )
    assert stopped.value.exit_code == 128 + signal.SIGTERM


def test_a_check_only_rank_zero_makes_fails_every_rank_alike() -> None:
    def check() -> None:
        raise AlignbenchError("bad --db")

    with pytest.raises(TrainingError) as failed:
        distributed.on_main(distributed.SINGLE, check, TrainingError)
    assert failed.value.message == "bad --db"
