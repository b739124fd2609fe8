"""``alignbench train``: the loop, read like timm's train.py.

setup (data, model, frozen parts, objective, parameter groups → ``create_optimizer_v2``, schedule
→ ``create_scheduler_v2`` stepped per optimiser update, checkpoint saver, resume) → for each epoch:
``train_one_epoch`` (forward through ``TrainingStep``, backward, optimiser step, DCLS positions
clamped into the dilated kernel, schedule update, one log line) → ``validate`` on ``--val`` → last
(and best) checkpoint → at the end, the trained model and its lineage in the store.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import create_transform
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from alignbench import __version__
from alignbench.distributed import Ranks, gather_objects, join_launch, on_main, sum_over_ranks
from alignbench.errors import DatasetError, TrainingError
from alignbench.models import (
    CAStreamModel,
    ModelRequest,
    clamp_positions,
    load_model,
    model_identity,
    resolve_device,
    save_state_dict,
    save_stream,
    set_global_pool,
)
from alignbench.store import open_store
from alignbench.training import _checkpoint as ckpt
from alignbench.training._data import EpochSampler, EvalImages, LabelledImages, TrainingImages, open_training_data
from alignbench.training._harmonizer import check_input_gradient, frozen_copy, harmonizer_terms
from alignbench.training._lineage import TrainedFile, check_tags_free, record_trained
from alignbench.training._map_data import MapImages, MapTrainingImages, input_preprocessing, open_map_data
from alignbench.training._objective import CrossEntropy, Distillation, GradCamConsistency, TrainingStep
from alignbench.training._params import Trainable, freeze, param_groups, train_mode, unpin_positions
from alignbench.training._request import SELF_TEACHER, TrainRequest, position_parameters

# final_loss: the mean training loss over this many last steps (one step's loss is noisy).
FINAL_LOSS_STEPS = 10


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step, as the progress bar and ``log.jsonl`` see it (averaged over all processes)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    terms: dict[str, float]  # each loss term before its weight (ce, gc, distill)
    accuracy: float  # top-1 on the step's training images (unlabelled ones: agreement with the teacher's top-1)
    lr: float | None  # None when only the positions train
    positions_lr: float | None
    images_per_s: float
    clamped: int  # position coordinates moved back into the dilated kernel after the step
    event: str = "step"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalRecord:
    """Top-1 on ``--val`` after ``step`` steps (step 0: the model before training)."""

    step: int
    epoch: int
    top1: float
    n_images: int
    best: bool
    event: str = "val"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[Any], None]  # receives StepRecord / EvalRecord (rank 0 only)


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` did (the CLI's summary, ``train --json``, ``OUT/train.json``)."""

    model: str
    dcls: bool
    method: str
    tag: str
    out: Path
    last: Path
    best: Path | None
    steps: int
    total_steps: int
    epochs: float  # passes over --data
    images_seen: int
    batch_size: int
    processes: int
    trainable_parameters: int
    trainable_positions: int
    total_parameters: int
    final_loss: float | None
    top1_before: float | None
    top1_after: float | None
    best_top1: float | None
    best_step: int | None
    seconds: float
    images_per_s: float
    resumed_from: int | None  # the step a --resume started from
    positions_unpinned: int  # v1 coordinates first moved off the integer grid (--positions-offset)
    positions_shift_max: float | None  # |P − P(parent)|, pixels, over every position coordinate (None: no DCLS)
    positions_shift_mean: float | None
    parent_fingerprint: str
    fingerprint: str | None  # of last.safetensors (as the store records it)
    best_fingerprint: str | None
    data_fingerprint: str
    recorded_in: str | None
    lineage: dict[str, Any] = field(default_factory=dict)
    ca_stream: bool = False
    extended_from: int | None = None  # a --resume with another --steps/--epochs: the length the checkpoint's run was planned for

    def to_json(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


class TrainingInterrupted(TrainingError):
    """Ctrl-C: the state after the last whole step is saved for --resume."""

    exit_code = 130


@dataclass
class _Run:
    """Everything the loop works on, built once by ``_setup``."""

    request: TrainRequest
    ranks: Ranks
    device: torch.device  # this rank's
    out: Path
    data: LabelledImages
    val: LabelledImages | None
    recipe: dict
    model: nn.Module
    step_module: nn.Module  # TrainingStep, DDP-wrapped with several processes
    trainable: Trainable
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    sampler: EpochSampler
    dataset: TrainingImages
    eval_loader: DataLoader | None
    per_process_batch: int
    steps_per_epoch: int
    total_steps: int
    state: ckpt.TrainState
    resumed_from: int | None
    workers: int
    weights_metadata: dict[str, str]
    progress: Progress | None
    positions_group: int | None  # index of the positions' parameter group, if any
    unpinned: int  # v1 position coordinates moved off the integer grid before the first step
    initial_positions: list[torch.Tensor]  # the parent's DCLS positions (how far training moved them)
    held: ckpt.OutDir | None = None  # --out, locked by rank 0
    saved_step: int | None = None  # the step of the last.pt on disk (None: none written yet)
    extended_from: int | None = None  # the length the resumed checkpoint's run was planned for, when it differs
    interruptible: bool = True  # False while the optimiser updates the parameters


def _device(request: TrainRequest, ranks: Ranks) -> torch.device:
    """This rank's device: under torchrun, ``cuda:LOCAL_RANK`` on GPUs (one per process), else the CPU."""
    resolved = resolve_device(request.device)
    if not ranks.distributed:
        return torch.device(resolved)
    return torch.device("cuda", ranks.local_rank) if resolved.startswith("cuda") else torch.device("cpu")


def _check_device(request: TrainRequest, device: torch.device) -> None:
    if request.amp and device.type != "cuda":
        raise TrainingError("--amp (mixed precision) needs CUDA; train on the CPU in float32 without it")


def _transforms(request: TrainRequest, model: nn.Module):
    preprocessing = model.alignbench_info.preprocessing
    size = (request.img_size, request.img_size) if request.img_size else tuple(preprocessing.input_size)
    common = dict(input_size=(3, *size), interpolation=preprocessing.interpolation, mean=preprocessing.mean, std=preprocessing.std)
    train = create_transform(is_training=True, no_aug=not request.aug, **common)
    evaluate = create_transform(is_training=False, crop_pct=preprocessing.crop_pct, **common)
    return train, evaluate


def _teacher(request: TrainRequest, student: nn.Module, device: torch.device, parent: nn.Module | None = None) -> nn.Module:
    """``--distill-from dense``: the student's dense original; ``self``: ``parent``, the student as training
    starts it (frozen); a model name: that model."""
    info = student.alignbench_info
    source = request.distill_from
    if source == SELF_TEACHER:
        return parent.to(device)
    if source == "dense":
        if not request.model.dcls:
            raise TrainingError("--distill-from dense distils a DCLS model from its dense original: add --dcls, or name a teacher model")
        dense_checkpoint = None if info.identity.init == "checkpoint" else request.model.checkpoint
        teacher_request = ModelRequest(request.model.name, checkpoint=dense_checkpoint, pretrained=request.model.pretrained)
    else:
        teacher_request = ModelRequest(source, pretrained=request.model.pretrained)
    teacher = load_model(teacher_request, device=str(device)).eval().requires_grad_(False)
    classes = teacher.alignbench_info.num_classes
    if classes != info.num_classes:
        raise TrainingError(
            f"--distill-from {source}: the teacher predicts {classes} classes, {info.name} {info.num_classes}; "
            "distil from a model with the same label space"
        )
    mine, theirs = info.preprocessing, teacher.alignbench_info.preprocessing
    if (mine.mean, mine.std) != (theirs.mean, theirs.std):
        raise TrainingError(
            f"--distill-from {source}: the teacher expects inputs normalised with mean {theirs.mean} / std {theirs.std}, "
            f"{info.name} with {mine.mean} / {mine.std}; distil from a model with the same input normalisation"
        )
    return teacher


def _objective(request: TrainRequest, model: nn.Module, device: torch.device, parent: nn.Module | None = None) -> list:
    if request.harmonize is not None:
        teacher = _teacher(request, model, device, parent) if request.distill_from else None
        return harmonizer_terms(request, teacher)
    terms: list = [CrossEntropy()]
    if request.gc_consistency > 0:
        terms.append(GradCamConsistency(weight=request.gc_consistency))
    if request.distill_from:
        terms.append(Distillation(_teacher(request, model, device, parent), weight=request.distill_weight))
    return terms


def _default_workers(ranks: Ranks) -> int:
    # a DataLoader worker per process, when the cores allow it (decoding and augmenting JPEGs
    # beside the step); none when every core already runs a training process
    cores = os.cpu_count() or 1
    return max(0, min(4, cores // ranks.world_size - 1))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_batch(request: TrainRequest, ranks: Ranks) -> int:
    """The batch of one process (``--batch-size`` is the batch of all of them together)."""
    if request.batch_size % ranks.world_size:
        raise TrainingError(
            f"--batch-size {request.batch_size} is the batch of all {ranks.world_size} processes together: "
            f"give a multiple of {ranks.world_size}"
        )
    return request.batch_size // ranks.world_size


@dataclass
class _Model:
    """The model as training starts it: pooling, frozen parts, unpinned positions, on its device."""

    model: nn.Module
    step_module: nn.Module  # TrainingStep, DDP-wrapped with several processes
    trainable: Trainable
    weights_metadata: dict[str, str]
    initial_positions: list[torch.Tensor]
    unpinned: int


def _prepare_model(request: TrainRequest, model: nn.Module, ranks: Ranks, device: torch.device) -> _Model:
    weights_metadata = {}
    if request.maxpool:
        set_global_pool(model, "max")
        weights_metadata["global_pool"] = "max"  # read back by load_model (models._pooling)
    trainable = freeze(model, request.freeze_mode)
    parent = frozen_copy(model) if request.distill_from == SELF_TEACHER else None  # before the positions are unpinned
    initial_positions = [p.detach().clone() for p in position_parameters(model)]
    unpinned = unpin_positions(model, request.positions_offset) if request.positions_offset else 0
    model.to(device)
    if request.harmonize is not None:
        check_input_gradient(
            model, tuple(input_preprocessing(model.alignbench_info.preprocessing, request.img_size).input_size), model.alignbench_info.name
        )
    step_module = TrainingStep(model, _objective(request, model, device, parent))
    if ranks.distributed:
        step_module = DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    return _Model(model, step_module, trainable, weights_metadata, initial_positions, unpinned)


def _optimizer(request: TrainRequest, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay=request.weight_decay, positions_lr=request.effective_positions_lr)
    try:
        return create_optimizer_v2(groups, opt=request.opt, lr=request.lr, weight_decay=request.weight_decay, momentum=request.momentum)
    except (AssertionError, ValueError, KeyError) as error:
        raise TrainingError(
            f"--opt {request.opt!r}: {error or 'unknown optimiser'}; use a timm optimiser name such as adamw or sgd"
        ) from None


def _scheduler(request: TrainRequest, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_steps: int) -> Any:
    """The schedule counts optimiser updates: one "epoch" of timm's scheduler per step."""
    if request.sched == "none":
        return None
    # --decay-epochs is in passes over --data; the scheduler's "epochs" are steps
    decay = {"decay_epochs": request.decay_epochs * steps_per_epoch} if request.decay_epochs else {}
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=request.sched,
        num_epochs=total_steps,
        warmup_epochs=request.warmup_steps,
        min_lr=request.min_lr,
        step_on_epochs=False,
        updates_per_epoch=1,
        decay_rate=request.decay_rate,
        **decay,
    )
    return scheduler


def _planned_steps(recipe: dict[str, Any], steps_per_epoch: int) -> int:
    """The number of steps a recipe plans (``--steps``, or ``--epochs`` passes; one pass by default)."""
    return recipe.get("steps") or (recipe.get("epochs") or 1) * steps_per_epoch


def _resume(
    saved: dict[str, Any] | None,
    ranks: Ranks,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    *,
    replanned: bool = False,
) -> tuple[ckpt.TrainState, int | None]:
    """The state a --resume checkpoint left (and the step it starts from); a fresh state without one.

    ``replanned``: the run's length changed (a run extended): the schedule is the one planned for the
    new length, taken at the resumed step — as timm's train.py does when resumed with more epochs."""
    if saved is None:
        return ckpt.TrainState(), None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and replanned:
        scheduler.step_update(num_updates=saved["state"]["step"])
    elif scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    state = ckpt.TrainState(**saved["state"])
    rng = saved["rng"]
    if ranks.rank < len(rng):
        ckpt.set_rng_state(rng[ranks.rank])
    return state, state.step


def _setup(request: TrainRequest, ranks: Ranks, device: torch.device, progress: Progress | None, db: str | None) -> _Run:
    data = (
        open_map_data(request.dataset, request.data_dir, request.fixation_sigma)
        if request.dataset is not None
        else open_training_data(request.data)
    )
    val = open_training_data(request.val, "--val") if request.val is not None else None
    out = request.out.resolve()
    held = ckpt.prepare_out(out, request.resume, owner=ranks.is_main)
    try:
        return _setup_in(request, ranks, device, progress, db, data, val, held)
    except BaseException:
        held.abandon()  # a refused run leaves no --out behind (nor a lock)
        raise


def _setup_in(
    request: TrainRequest,
    ranks: Ranks,
    device: torch.device,
    progress: Progress | None,
    db: str | None,
    data: LabelledImages,
    val: LabelledImages | None,
    held: ckpt.OutDir,
) -> _Run:
    out = held.path
    recipe = {**request.recipe(), "data": data.fingerprint()}
    saved = ckpt.load_state(request.resume, recipe) if request.resume is not None else None
    per_process = _check_batch(request, ranks)

    _seed_everything(request.seed + ranks.rank)
    model = load_model(request.model, device="cpu")
    info = model.alignbench_info
    if isinstance(data, MapImages):
        data.check_labels(info.num_classes, info.name, "--dataset", teacher=request.distill_from is not None)
    else:
        data.check_labels(info.num_classes, info.name, "--data")
    if val is not None:
        val.check_labels(info.num_classes, info.name, "--val")
    on_main(ranks, lambda: _check_store(db, request, out), TrainingError)
    prepared = _prepare_model(request, model, ranks, device)
    optimizer = _optimizer(request, model)

    train_transform, eval_transform = _transforms(request, model)
    if isinstance(data, MapImages):
        preprocessing = input_preprocessing(info.preprocessing, request.img_size)
        dataset = MapTrainingImages(data, preprocessing, seed=request.seed, flip=request.aug)
    else:
        dataset = TrainingImages(data, train_transform, seed=request.seed, composites=request.gc_consistency > 0)
    sampler = EpochSampler(dataset, num_replicas=ranks.world_size, rank=ranks.rank, seed=request.seed)
    steps_per_epoch = math.ceil(sampler.num_samples / per_process)
    total_steps = _planned_steps(recipe, steps_per_epoch)
    extended_from = None
    if saved is not None and _planned_steps(saved["recipe"], steps_per_epoch) != total_steps:
        extended_from = _planned_steps(saved["recipe"], steps_per_epoch)
        reached = saved["state"]["step"]
        if total_steps < reached:
            raise TrainingError(
                f"--resume {request.resume} is at step {reached}, past the {total_steps} steps asked for; "
                f"give --steps {reached} or more (or the --epochs that many steps make)"
            )
    scheduler = _scheduler(request, optimizer, steps_per_epoch, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=request.amp)
    workers = request.workers if request.workers is not None else _default_workers(ranks)
    eval_loader = None
    if val is not None and ranks.is_main:
        eval_loader = DataLoader(EvalImages(val, eval_transform), batch_size=per_process, num_workers=workers, generator=torch.Generator())

    state, resumed_from = _resume(saved, ranks, model, optimizer, scheduler, scaler, replanned=extended_from is not None)
    if ranks.is_main and resumed_from is not None:
        ckpt.truncate_log(out / ckpt.LOG_FILE, resumed_from)  # steps logged after the checkpoint are taken again
    elif ranks.is_main:
        (out / ckpt.LOG_FILE).unlink(missing_ok=True)  # the log of a run that left no checkpoint (else prepare_out refused)
    positions_group = next((i for i, group in enumerate(optimizer.param_groups) if group.get("group_name") == "positions"), None)
    return _Run(
        request=request,
        ranks=ranks,
        device=device,
        out=out,
        data=data,
        val=val,
        recipe=recipe,
        model=model,
        step_module=prepared.step_module,
        trainable=prepared.trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        sampler=sampler,
        dataset=dataset,
        eval_loader=eval_loader,
        per_process_batch=per_process,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        state=state,
        resumed_from=resumed_from,
        workers=workers,
        weights_metadata=prepared.weights_metadata,
        progress=progress,
        positions_group=positions_group,
        unpinned=prepared.unpinned,
        initial_positions=prepared.initial_positions,
        held=held,
        saved_step=resumed_from,
        extended_from=extended_from,
    )


def _check_store(db: str | None, request: TrainRequest, out: Path) -> None:
    open_store(db).close()  # a bad --db fails now, not after the training
    check_tags_free(db, request.effective_tag, out, retag=request.retag)  # and so does a --tag naming another run's model


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _batches(loader: DataLoader):
    """The loader's batches; an unreadable image (raised in a worker) becomes its own one-line error."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except DatasetError as error:
            raise DatasetError(error.message.strip().splitlines()[-1].split(": ", 1)[-1]) from None
        yield batch


def _learning_rates(run: _Run) -> tuple[float, float | None]:
    """The base rate (None when only positions train) and the positions' rate of the step about to be taken."""
    groups = run.optimizer.param_groups
    positions = float(groups[run.positions_group]["lr"]) if run.positions_group is not None else None
    base = next((float(group["lr"]) for group in groups if group.get("group_name") != "positions"), None)
    return base, positions


def _step_record(
    run: _Run, output: dict[str, Any], labels: torch.Tensor, seconds: float, clamped: int, rates: tuple[float, float | None]
) -> StepRecord:
    """The step's loss, terms and accuracy averaged over every process's images."""
    labels = output.get("labels", labels)  # an unlabelled image: the teacher's top-1 (agreement with it)
    count = float(labels.numel())
    terms = output["terms"]
    correct = (output["logits"].detach().argmax(dim=1) == labels).sum().float()
    local = torch.stack(
        [
            output["loss"].detach().float() * count,
            *(v.float() * count for v in terms.values()),
            correct,
            torch.tensor(count, device=labels.device),
        ]
    ).cpu()
    total = sum_over_ranks(local, run.ranks)
    images = float(total[-1])
    loss, *term_values, accuracy = (total[:-1] / images).tolist()
    return StepRecord(
        step=run.state.step,
        total_steps=run.total_steps,
        epoch=run.state.epoch,
        loss=loss,
        terms=dict(zip(terms, term_values)),
        accuracy=accuracy,
        lr=rates[0],
        positions_lr=rates[1],
        images_per_s=images / seconds if seconds > 0 else 0.0,
        clamped=clamped,
    )


def train_one_epoch(run: _Run, loader: DataLoader) -> bool:
    """Steps through one epoch (from where a resumed run stopped) until it ends or the run's last
    step; returns whether the epoch was completed."""
    state, model, optimizer = run.state, run.model, run.optimizer
    train_mode(model, run.trainable)
    device = run.device
    autocast = torch.autocast(device.type, enabled=True) if run.request.amp else nullcontext()
    for batch in _batches(loader):
        start = time.perf_counter()
        rates = _learning_rates(run)
        batch = _to_device(batch, device)
        with autocast:
            output = run.step_module(batch)
        loss = output["loss"]
        if not torch.isfinite(loss.detach()):
            raise TrainingError(f"the loss is {float(loss.detach())} at step {state.step + 1}; lower --lr ({_kept_checkpoint(run)})")
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.interruptible = False
        try:
            run.scaler.step(optimizer)
        except RuntimeError as error:  # torch's optimisers turn a step size past float32 into this error
            if "overflow" not in str(error):
                raise
            raise TrainingError(
                f"the update of step {state.step + 1} overflows float32 ({str(error).splitlines()[0]}); lower --lr ({_kept_checkpoint(run)})"
            ) from None
        run.scaler.update()
        # ConvNeXt-dcls engine.py: the model's clamp_parameters() after every optimiser step
        clamped = clamp_positions(model)
        state.step += 1
        state.batch_in_epoch += 1
        state.images_seen += run.request.batch_size
        if run.scheduler is not None:
            run.scheduler.step_update(num_updates=state.step)
        run.interruptible = True
        seconds = time.perf_counter() - start
        state.seconds += seconds
        record = _step_record(run, output, batch["label"], seconds, clamped, rates)
        state.recent_losses = (state.recent_losses + [record.loss])[-FINAL_LOSS_STEPS:]
        if run.ranks.is_main:
            ckpt.append_log(run.out / ckpt.LOG_FILE, record.to_json())
            if run.progress is not None:
                run.progress(record)
        every = run.request.checkpoint_every
        if every and state.step % every == 0 and state.step < run.total_steps:
            _save_last(run)
        if state.step >= run.total_steps:
            return state.batch_in_epoch >= run.steps_per_epoch
    return True


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 on the loader's images (eval mode; the caller restores training mode)."""
    model.eval()
    correct = total = 0
    for images, labels in _batches(loader):
        logits = model(images.to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels).sum())
        total += int(labels.numel())
    return correct / total


def _evaluate(run: _Run) -> EvalRecord | None:
    """Top-1 on --val (rank 0), the best checkpoint when it improves."""
    if run.eval_loader is None:
        return None
    state = run.state
    top1 = validate(run.model, run.eval_loader, run.device)
    best = state.step > 0 and (state.best_top1 is None or top1 > state.best_top1)
    if state.step == 0:
        state.top1_before = top1
    state.last_top1, state.last_top1_step = top1, state.step
    if best:
        _check_finite(run)
        state.best_top1, state.best_step = top1, state.step
        ckpt.atomic_write(run.out / ckpt.BEST_WEIGHTS, lambda temporary: _save_weights(run, temporary))
    record = EvalRecord(step=state.step, epoch=state.epoch, top1=top1, n_images=len(run.val), best=best)
    ckpt.append_log(run.out / ckpt.LOG_FILE, record.to_json())
    if run.progress is not None:
        run.progress(record)
    return record


def _kept_checkpoint(run: _Run) -> str:
    """What a run stopped by bad numbers leaves, truly: the checkpoint on disk, or none."""
    if run.saved_step is None:
        return f"no checkpoint was written: the run left only its log, {run.out / ckpt.LOG_FILE}"
    return f"the checkpoint of step {run.saved_step} in {run.out} is intact: --resume {run.out / ckpt.STATE_FILE} continues from it"


def _check_finite(run: _Run) -> None:
    """Non-finite weights are never saved (nor recorded, nor scored): an optimiser step that overflowed
    stops the run, naming the tensors."""
    bad = [name for name, tensor in run.model.state_dict().items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        total = sum(1 for tensor in run.model.state_dict().values() if tensor.is_floating_point())
        raise TrainingError(
            f"step {run.state.step} left {len(bad)} of {total} weight tensors non-finite (NaN or ±inf, e.g. {bad[0]}); "
            f"lower --lr ({_kept_checkpoint(run)})"
        )


def _save_weights(run: _Run, path: Path) -> None:
    # save_state_dict picks the format from the suffix; the temporary name ends in .tmp
    staged = path.with_name(path.name + ".safetensors")
    # a CA-Stream run writes the stream alone: its backbone is the parent's, unchanged
    save = save_stream if isinstance(run.model, CAStreamModel) else save_state_dict
    try:
        save(run.model, staged, metadata=run.weights_metadata)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def _save_last(run: _Run) -> None:
    """last.pt (everything --resume needs, every process's generators) and last.safetensors."""
    _check_finite(run)  # every rank holds the same weights (DDP): all stop together
    rng = gather_objects(ckpt.rng_state(), run.ranks)
    if not run.ranks.is_main:
        return
    ckpt.save_state(
        run.out / ckpt.STATE_FILE,
        recipe=run.recipe,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        state=run.state,
        rng=rng,
    )
    ckpt.atomic_write(run.out / ckpt.LAST_WEIGHTS, lambda temporary: _save_weights(run, temporary))
    run.saved_step = run.state.step


def _loop(run: _Run) -> None:
    state = run.state
    if state.step == 0 and run.ranks.is_main:
        _evaluate(run)  # the model before training
    while state.step < run.total_steps:
        run.sampler.set_position(state.epoch, state.batch_in_epoch * run.per_process_batch)
        # Its own generator: starting a loader draws a seed, which must not move the global
        # generator (dropout) — a resumed run starts one where an uninterrupted run does not.
        loader = DataLoader(
            run.dataset,
            batch_size=run.per_process_batch,
            sampler=run.sampler,
            num_workers=run.workers,
            pin_memory=run.device.type == "cuda",
            generator=torch.Generator(),
        )
        completed = train_one_epoch(run, loader)
        if completed:
            state.epoch += 1
            state.batch_in_epoch = 0
        if run.ranks.is_main and (completed or state.step >= run.total_steps):
            _evaluate(run)
        _save_last(run)


def _lineage(run: _Run, result_fields: dict[str, Any]) -> dict[str, Any]:
    request = run.request
    hyper = {key: value for key, value in run.recipe.items() if key not in ("model", "data")}
    return {
        "method": request.method.name,
        "data": run.recipe["data"],
        "data_dir": str(run.data.root) if run.data.layout != "sample" else "sample",
        "val_dir": str(run.val.root) if run.val is not None else None,
        **({"harmonize": request.harmonize, "human_maps": run.data.source()} if isinstance(run.data, MapImages) else {}),
        "steps": run.state.step,
        "images_seen": run.state.images_seen,
        "processes": run.ranks.world_size,
        "hyper_parameters": hyper,
        **result_fields,
        "top1_before": run.state.top1_before,
        "top1_after": run.state.last_top1,
        **(
            {"extended": {"planned_steps": run.extended_from, "replanned_at_step": run.resumed_from, "steps": run.total_steps}}
            if run.extended_from is not None
            else {}
        ),
        "versions": {"alignbench": __version__, "torch": torch.__version__},
    }


def _positions_shift(run: _Run) -> tuple[float | None, float | None]:
    if not run.initial_positions:
        return None, None
    shifts = torch.cat([(p.detach().cpu() - p0).abs().flatten() for p, p0 in zip(position_parameters(run.model), run.initial_positions)])
    return float(shifts.max()), float(shifts.mean())


def _parent(run: _Run) -> tuple[Any, int]:
    """The model training started from, and its parameter count. A fresh CA-Stream is no model of its
    own: a stream trained from scratch descends from the backbone with its global average pooling
    (so ``compare --against parent`` is GAP vs stream); one trained further from a stream
    checkpoint, from that stream."""
    info, model = run.model.alignbench_info, run.model
    if isinstance(model, CAStreamModel) and run.request.model.stream_checkpoint is None:
        pooled = replace(run.request.model, ca_stream=False, tag=None)
        return model_identity(pooled), info.param_count - model.ca_stream.parameter_count()
    return info.identity, info.param_count


def _finish(run: _Run, db: str | None) -> TrainResult:
    request, state, info = run.request, run.state, run.model.alignbench_info
    shift_max, shift_mean = _positions_shift(run)
    last, best = run.out / ckpt.LAST_WEIGHTS, run.out / ckpt.BEST_WEIGHTS
    final_loss = float(np.mean(state.recent_losses)) if state.recent_losses else None
    lineage = _lineage(run, {"final_loss": final_loss, "positions_shift_max": shift_max, "positions_shift_mean": shift_mean})
    tag = request.effective_tag
    recorded_in, identities = None, {}
    parent, parent_params = _parent(run)
    if run.ranks.is_main:
        files = [TrainedFile("last", last, {"step": state.step, "top1": state.last_top1 if state.last_top1_step == state.step else None})]
        if state.best_step is not None and best.is_file():
            files.append(TrainedFile("best", best, {"step": state.best_step, "top1": state.best_top1}))
        recorded_in, identities = record_trained(
            db,
            parent=parent,
            parent_request=request.model,
            origin=request.method.name,
            tag=tag,
            files=files,
            lineage=lineage,
            param_count=info.param_count,
            family=info.spec.family,
            parent_param_count=parent_params,
            retag=request.retag,
        )
    result = TrainResult(
        model=info.spec.name,
        dcls=request.model.dcls,
        method=request.method.name,
        tag=tag,
        out=run.out,
        last=last,
        best=best if state.best_step is not None else None,
        steps=state.step,
        total_steps=run.total_steps,
        epochs=state.images_seen / len(run.data),
        images_seen=state.images_seen,
        batch_size=request.batch_size,
        processes=run.ranks.world_size,
        trainable_parameters=run.trainable.parameters,
        trainable_positions=run.trainable.positions,
        total_parameters=run.trainable.total,
        final_loss=final_loss,
        top1_before=state.top1_before,
        top1_after=state.last_top1,
        best_top1=state.best_top1,
        best_step=state.best_step,
        seconds=state.seconds,
        images_per_s=state.images_seen / state.seconds if state.seconds else 0.0,
        resumed_from=run.resumed_from,
        positions_unpinned=run.unpinned,
        positions_shift_max=shift_max,
        positions_shift_mean=shift_mean,
        parent_fingerprint=parent.fingerprint,
        fingerprint=identities["last"].fingerprint if "last" in identities else None,
        best_fingerprint=identities["best"].fingerprint if "best" in identities else None,
        data_fingerprint=run.recipe["data"],
        recorded_in=recorded_in,
        lineage=lineage,
        ca_stream=request.model.ca_stream,
        extended_from=run.extended_from,
    )
    if run.ranks.is_main:
        ckpt.write_json(run.out / ckpt.SUMMARY_FILE, {**result.to_json(), "request": request.to_json()})
    return result


def train(request: TrainRequest, *, db: str | None = None, progress: Progress | None = None) -> TrainResult:
    """Train ``request.model`` on ``request.data`` into ``request.out`` and record it in the store at ``db``.

    Run under ``torchrun --nproc_per_node N -m alignbench train ...`` it trains with N processes
    (DistributedDataParallel). ``progress`` receives every StepRecord and EvalRecord (rank 0).
    Raises AlignbenchError subclasses for bad input before anything is written, and
    TrainingInterrupted (the state after the last whole step saved) on Ctrl-C. Under torchrun the
    launch is joined as scoring joins it (``alignbench.distributed``: the collective timeout, and
    torchrun's SIGTERM when another rank fails as a one-line AlignbenchError naming the checkpoints kept).
    """
    request.validate()
    ranks = join_launch(request.device, kept=_kept(request.out.resolve()))  # alone: SINGLE
    device = _device(request, ranks)
    _check_device(request, device)
    run = _setup(request, ranks, device, progress, db)
    try:
        return _train(run, db)
    finally:
        if run.held is not None:
            run.held.release()


def _train(run: _Run, db: str | None) -> TrainResult:
    try:
        _loop(run)
    except KeyboardInterrupt:
        if run.interruptible and run.state.step > 0:
            _save_last(run)
            raise TrainingInterrupted(
                f"interrupted after step {run.state.step} of {run.total_steps}; continue with "
                f"--resume {run.out / ckpt.STATE_FILE} (same options)"
            ) from None
        raise TrainingInterrupted(f"interrupted during step {run.state.step + 1}; {_kept_checkpoint(run)}") from None
    return _finish(run, db)


def _kept(out: Path) -> str:
    """What a rank stopped by torchrun (another one failed) leaves: the checkpoints written so far."""
    return f"the checkpoints written to {out} are kept; continue with --resume {out / ckpt.STATE_FILE} (same options)"
