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

import fcntl
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
LENGTH = ("steps", "epochs")  # recipe entries a --resume may change: the run is extended (or shortened)
_TEMPORARY = ".{name}.{pid}.tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` then rename it to ``path``; on any failure ``path`` is left as it was.

    The file gets the mode of any file the user creates (0666 less the umask): a writer that stages
    through ``tempfile`` (safetensors does) would otherwise leave it 0600, unlike its neighbours."""
    temporary = path.parent / _TEMPORARY.format(name=path.name, pid=os.getpid())
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
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


@dataclass
class OutDir:
    """``--out`` as a run holds it: whether the run created it (a refused run removes it again) and
    the descriptor of its lock (an flock on the directory, released when the process ends, even by kill -9)."""

    path: Path
    created: bool
    lock: int | None = None

    def release(self) -> None:
        if self.lock is not None:
            os.close(self.lock)  # closing the descriptor drops the flock
            self.lock = None

    def abandon(self) -> None:
        """A refused run: the lock released, and the directory removed when this run created it and it is still empty."""
        self.release()
        if self.created:
            try:
                self.path.rmdir()
            except OSError:  # not empty (or already gone): it holds something that is not ours to delete
                pass


def _lock(out: Path) -> int:
    descriptor = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise TrainingError(
            f"--out {out} is being written by another `alignbench train` running now; wait for it to end, or choose another --out"
        ) from None
    return descriptor


def prepare_out(out: Path, resume: Path | None, *, owner: bool = True) -> OutDir:
    """``out`` exists and is writable, and holds no other run unless it is being resumed.

    The ``owner`` (the one process of a run that writes files: torchrun's rank 0) locks it — a second
    run into it at once is refused — and then removes the temporary files a killed process left
    behind (never renamed, so never a checkpoint). ``OutDir.release`` (or the process's end) unlocks it.
    """
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrainingError(f"cannot create --out {out} ({error.strerror}); choose another directory") from None
    held = OutDir(out, created)
    try:
        _check_out(held, resume, owner)
    except TrainingError:
        held.abandon()
        raise
    return held


def _check_out(held: OutDir, resume: Path | None, owner: bool) -> None:
    out = held.path
    if not out.is_dir():
        raise TrainingError(f"--out {out} is not a directory; choose another path")
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise TrainingError(f"--out {out} is not writable ({error.strerror}); choose another directory") from None
    if owner:  # before anything in it is looked at or removed: another run's temporaries are its own
        held.lock = _lock(out)
    if (out / STATE_FILE).exists() and resume is None:
        raise TrainingError(
            f"--out {out} already holds a training run ({STATE_FILE}); continue it with --resume {out / STATE_FILE}, "
            "or choose another --out"
        )
    for stale in out.glob(".*.tmp") if owner else ():
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
    except Exception:  # torch raises many kinds (with advice about weights_only) for a file that is not a checkpoint
        raise TrainingError(
            f"--resume {path} is not a training checkpoint (torch cannot read it as one); pass the {STATE_FILE} of an earlier run's --out"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise TrainingError(f"--resume {path} is not an alignbench training state; pass the {STATE_FILE} of an earlier run's --out")
    # the length of the run may change: a longer (or shorter) run continues, its schedule re-planned (see _train)
    planned = {key: value for key, value in recipe.items() if key not in LENGTH}
    differences = recipe_differences({key: value for key, value in payload["recipe"].items() if key not in LENGTH}, planned)
    if differences:
        shown = "; ".join(differences[:4]) + (f"; (+{len(differences) - 4} more)" if len(differences) > 4 else "")
        raise TrainingError(
            f"--resume {path} was written by another model or recipe ({shown}); resume with the options it was "
            "started with, or train afresh into another --out"
        )
    return payload


def truncate_log(path: Path, step: int) -> None:
    """Drop the records after ``step`` (a run killed after its last checkpoint logged steps it will take
    again when resumed): the log then holds each step once."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by the kill
            break
        if record.get("step", 0) > step:
            break
        kept.append(line)
    if len(kept) < len(lines):
        atomic_write(path, lambda temporary: temporary.write_text("".join(kept), encoding="utf-8"))


def append_log(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=False, default=str) + "\n")


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(value, indent=1, default=str) + "\n", encoding="utf-8"))
