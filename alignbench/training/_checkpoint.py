"""What a training run writes to ``--out``, atomically, and how ``--resume`` reads it back.

- ``last.pt``: the whole state an uninterrupted run carries from one step to the next — model,
  optimiser, scheduler, AMP scaler, every process's random generators, the step, the epoch and the
  position in it, the best top-1 so far — and the recipe it was written for (``--resume`` refuses a
  checkpoint of another model, data or hyper-parameter and names what differs);
- ``last.safetensors`` / ``best.safetensors``: the weights alone, a plain state_dict that
  ``alignbench score MODEL [--dcls] --checkpoint FILE`` loads like any checkpoint;
- ``log.jsonl``: one JSON line per step and per evaluation; ``train.json``: the run's summary.

Each file is written to a temporary name in the same directory, flushed to disk and renamed over
the old one (``os.replace`` is atomic), so a process killed while writing (even ``kill -9``) leaves
the previous file whole. timm's ``CheckpointSaver`` does the renaming too, but keeps neither the
random generators, the scheduler nor the position inside an epoch (an exact resume needs all three),
and pickles the weights where scoring wants safetensors; hence this module.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignbench.errors import TrainingError

STATE_FILE = "last.pt"
LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "train.json"
STATE_FORMAT = "alignbench-train-state-1"
_TEMPORARY = ".{name}.{pid}.tmp"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` then rename it to ``path``; on any failure ``path`` is left as it was."""
    temporary = path.parent / _TEMPORARY.format(name=path.name, pid=os.getpid())
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the directory is synced
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def prepare_out(out: Path, resume: Path | None) -> None:
    """``out`` exists and is writable, and holds no other run unless it is being resumed.

    Temporary files a killed process left behind (never renamed, so never a checkpoint) are removed.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrainingError(f"cannot create --out {out} ({error.strerror}); choose another directory") from None
    if not out.is_dir():
        raise TrainingError(f"--out {out} is not a directory; choose another path")
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise TrainingError(f"--out {out} is not writable ({error.strerror}); choose another directory") from None
    if (out / STATE_FILE).exists() and resume is None:
        raise TrainingError(
            f"--out {out} already holds a training run ({STATE_FILE}); continue it with --resume {out / STATE_FILE}, "
            "or choose another --out"
        )
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


@dataclass
class TrainState:
    """The loop's own state between two steps (saved with the model and optimiser)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` done (per process)
    images_seen: int = 0
    seconds: float = 0.0  # training time so far (resumed runs add up)
    top1_before: float | None = None
    last_top1: float | None = None
    last_top1_step: int | None = None
    best_top1: float | None = None
    best_step: int | None = None
    recent_losses: list[float] = field(default_factory=list)  # the last steps' losses (final_loss)


def rng_state() -> dict[str, Any]:
    """This process's random generators, in types ``torch.load(weights_only=True)`` accepts."""
    version, mt_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss), float(cached)],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))


def save_state(
    path: Path, *, recipe: dict, model: torch.nn.Module, optimizer, scheduler, scaler, state: TrainState, rng: list[dict]
) -> None:
    payload = {
        "format": STATE_FORMAT,
        "recipe": recipe,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "state": asdict(state),
        "rng": rng,  # one entry per process, in rank order
    }
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def recipe_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """'name: X in the checkpoint, Y now' for every recipe entry that differs."""
    before, after = _flatten(saved), _flatten(now)
    return [
        f"{key}: {before.get(key)!r} in the checkpoint, {after.get(key)!r} now"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def load_state(path: Path, recipe: dict) -> dict[str, Any]:
    """The state saved at ``path`` (``--resume``), after checking it was written for ``recipe``."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"--resume {path} does not exist; pass the {STATE_FILE} of an earlier run's --out")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise TrainingError(
            f"--resume {path} cannot be read ({str(error).splitlines()[0]}); pass the {STATE_FILE} of an earlier run"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise TrainingError(f"--resume {path} is not an alignbench training state; pass the {STATE_FILE} of an earlier run's --out")
    differences = recipe_differences(payload["recipe"], recipe)
    if differences:
        shown = "; ".join(differences[:4]) + (f"; (+{len(differences) - 4} more)" if len(differences) > 4 else "")
        raise TrainingError(
            f"--resume {path} was written by another model or recipe ({shown}); resume with the options it was "
            "started with, or train afresh into another --out"
        )
    return payload


def append_log(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=False, default=str) + "\n")


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(value, indent=1, default=str) + "\n", encoding="utf-8"))
