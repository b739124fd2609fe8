"""`alignbench train`: parse options, call alignbench.training.train, show progress and the summary."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from alignbench.cli import _options as o
from alignbench.cli._errors import guarded, stdout_console
from alignbench.cli._format import number, summary_table
from alignbench.models.specs import variant_name
from alignbench.training import FREEZE_MODES, METHODS, PAPER_GC_LAMBDA, POSITIONS_LR_FACTOR, POSITIONS_OFFSET, SCHEDULES

_FREEZE_HELP = "; ".join(f"{mode.name}: {mode.description}" for mode in FREEZE_MODES.values())
_FREEZE_BY_METHOD: dict[str, list[str]] = {}
for _method in METHODS:  # a method may have two entries (the harmonizer: positions only with --dcls)
    _FREEZE_BY_METHOD.setdefault(_method.name, []).append(_method.default_freeze)
_METHOD_DEFAULTS = ", ".join(f"{name}: {' or '.join(dict.fromkeys(modes))}" for name, modes in _FREEZE_BY_METHOD.items())


def _recipe_default(option: str) -> str:
    """``--opt``'s (etc.) default per method, from the methods' recipes (never a second list)."""
    values: dict[str, list[str]] = {}
    for method in METHODS:
        values.setdefault(
            f"{method.recipe[option]:g}" if isinstance(method.recipe[option], float) else str(method.recipe[option]), []
        ).append(method.name)
    values = {value: list(dict.fromkeys(names)) for value, names in values.items()}
    if len(values) == 1:
        return f"default {next(iter(values))}"
    return "default " + "; ".join(f"{value} ({', '.join(names)})" for value, names in values.items())


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  acc {task.fields[accuracy]}  {task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _summary(result) -> Table:
    trained = f"{result.trainable_parameters:,} of {result.total_parameters:,} parameters"
    if result.trainable_positions:
        trained += f" ({result.trainable_positions:,} DCLS position coordinates)"
    rows = [
        ("model", f"{variant_name(result.model, dcls=result.dcls, ca_stream=result.ca_stream)} · {result.method}"),
        ("trained", trained),
        (
            "steps",
            f"{result.steps} of {result.total_steps} ({result.epochs:.2f} epochs, {result.images_seen:,} images, "
            f"batch {result.batch_size}, {result.processes} process{'es' if result.processes > 1 else ''})"
            + (f", resumed at step {result.resumed_from}" if result.resumed_from is not None else "")
            + (
                f"; extended from a run planned for {result.extended_from} steps, its schedule re-planned for {result.total_steps} "
                f"at step {result.resumed_from} (not the same as a run planned for {result.total_steps} from the start)"
                if result.extended_from is not None
                else ""
            ),
        ),
        ("final loss", f"{number(result.final_loss)} (mean of the last steps)"),
    ]
    if result.top1_before is not None:
        rows.append(
            (
                "--val top-1",
                f"{number(result.top1_before)} → {number(result.top1_after)} (best {number(result.best_top1)} at step {result.best_step})",
            )
        )
    if result.positions_shift_max is not None:
        moved = f"max {result.positions_shift_max:.4f} px, mean {result.positions_shift_mean:.4f} px"
        if result.positions_unpinned:
            moved += f" (first {result.positions_unpinned:,} coordinates moved off the integer grid)"
        rows.append(("positions moved", moved))
    rows.append(("speed", f"{result.images_per_s:.1f} img/s over {result.seconds:.1f} s of steps"))
    rows.append(("wrote", f"{result.last}" + (f", {result.best}" if result.best else "") + f" (log: {result.out / 'log.jsonl'})"))
    if result.recorded_in:
        rows.append(
            (
                "recorded",
                f"{result.recorded_in}: tag {result.tag} (fingerprint {result.fingerprint[:12]}), parent {result.parent_fingerprint[:12]}",
            )
        )
        flags = f"{' --dcls' if result.dcls else ''}{' --ca-stream' if result.ca_stream else ''}"
        rows.append(
            (
                "score it",
                f"alignbench score --trained {result.tag}  (or: alignbench score {result.model}{flags} --checkpoint {result.last})",
            )
        )
    return summary_table(f"trained {result.tag}", rows)


# Every option of `train` but the model's, in the order --help lists them: parameter -> (alias,
# default). Each is the TrainRequest field of the same name (TrainRequest.from_options): a new
# training option is a field there and an entry here, nowhere else.
TRAIN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "out": (
        Annotated[
            Path,
            typer.Option(
                "--out",
                help="Directory for last.pt (to --resume), last.safetensors / best.safetensors (to score), log.jsonl, train.json.",
                file_okay=False,
                show_default=False,
            ),
        ],
        o.REQUIRED,
    ),
    "data": (
        Annotated[
            Optional[str],
            typer.Option(
                "--data",
                help="Training images: an ImageFolder tree (ImageNet wnid folders → ImageNet-1k indices), a folder with images/ and labels.csv, or `sample` (the embedded images). With --harmonize: --dataset instead.",
                show_default=False,
            ),
        ],
        None,
    ),
    # --harmonize's images and human maps: a dataset as `score` takes it
    "dataset": (o.Dataset, None),
    "data_dir": (o.DataDir, None),
    "fixation_sigma": (o.FixationSigma, None),
    # not a training option: the place of every model option but --tag (o.with_model_options)
    "model_options": (dict, None),
    "val": (
        Annotated[
            Optional[str],
            typer.Option(
                "--val",
                help="Images (same layouts) for top-1 before training and after each epoch; picks best.safetensors.",
                show_default=False,
            ),
        ],
        None,
    ),
    "steps": (
        Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps (or --epochs; default 1 epoch).", show_default=False)],
        None,
    ),
    "epochs": (Annotated[Optional[int], typer.Option("--epochs", help="Passes over --data.", show_default=False)], None),
    "batch_size": (Annotated[int, typer.Option("--batch-size", help="Images per step, over all processes.")], 32),
    "opt": (
        Annotated[
            Optional[str],
            typer.Option(
                "--opt",
                help=f"timm optimiser (create_optimizer_v2): adamw, sgd, momentum, lamb, ...; {_recipe_default('opt')}.",
                show_default=False,
            ),
        ],
        None,
    ),
    "lr": (
        Annotated[Optional[float], typer.Option("--lr", help=f"Base learning rate; {_recipe_default('lr')}.", show_default=False)],
        None,
    ),
    "weight_decay": (
        Annotated[
            Optional[float],
            typer.Option(
                "--weight-decay",
                help=f"Weight decay (not of biases, norms or positions); {_recipe_default('weight_decay')}.",
                show_default=False,
            ),
        ],
        None,
    ),
    "momentum": (Annotated[float, typer.Option("--momentum", help="Momentum of SGD-like optimisers.")], 0.9),
    "sched": (
        Annotated[
            Optional[str],
            typer.Option(
                "--sched",
                help=f"timm schedule per step (create_scheduler_v2): {', '.join(SCHEDULES)}; {_recipe_default('sched')}.",
                show_default=False,
            ),
        ],
        None,
    ),
    "decay_epochs": (
        Annotated[
            Optional[float],
            typer.Option(
                "--decay-epochs",
                help="step/multistep schedules: decay every this many epochs (ca-stream: 30, the official recipe).",
                show_default=False,
            ),
        ],
        None,
    ),
    "decay_rate": (Annotated[float, typer.Option("--decay-rate", help="step/multistep schedules: the factor of each decay.")], 0.1),
    "warmup_steps": (Annotated[int, typer.Option("--warmup-steps", help="Linear warm-up steps.")], 0),
    "min_lr": (Annotated[float, typer.Option("--min-lr", help="Lowest rate of decaying schedules.")], 0.0),
    "positions_lr": (
        Annotated[
            Optional[float],
            typer.Option(
                "--positions-lr",
                help=f"Learning rate of the DCLS positions (default {POSITIONS_LR_FACTOR:g}× --lr, as ConvNeXt-dcls).",
                show_default=False,
            ),
        ],
        None,
    ),
    "positions_offset": (
        Annotated[
            float,
            typer.Option(
                "--positions-offset",
                help="v1 positions on the integer grid (from-dense) first move this many pixels, where the v1 kernel has a gradient (0: off).",
            ),
        ],
        POSITIONS_OFFSET,
    ),
    "freeze": (
        Annotated[
            Optional[str],
            typer.Option("--freeze", help=f"What stays fixed. {_FREEZE_HELP}. Default by method: {_METHOD_DEFAULTS}.", show_default=False),
        ],
        None,
    ),
    "gc_consistency": (
        Annotated[
            float,
            typer.Option(
                "--gc-consistency",
                help=f"λ of Pillai & Pirsiavash's Grad-CAM consistency loss (loss = CE + λ·GC; the paper uses {PAPER_GC_LAMBDA:g}); 0: off.",
            ),
        ],
        0.0,
    ),
    "harmonize": (
        Annotated[
            Optional[float],
            typer.Option(
                "--harmonize",
                help="λ of the neural harmonizer (Fel et al. 2022): CE + 1e-5·L2 + λ·pyramid MSE between the model's saliency and "
                "the human maps of --dataset (with --distill-from self: KL to the frozen parent instead of CE); with --dcls only the "
                "positions train unless --freeze says otherwise; 0: the same training without the human maps (the control).",
                show_default=False,
            ),
        ],
        None,
    ),
    "maxpool": (
        Annotated[
            bool, typer.Option("--maxpool", help="Global max pooling instead of average (their GMP variant); the checkpoint records it.")
        ],
        False,
    ),
    "distill_from": (
        Annotated[
            Optional[str],
            typer.Option(
                "--distill-from",
                help="Add KL to a teacher's logits: `dense` (a DCLS model's dense original), `self` (the model as training starts, frozen: data without labels) or a model name.",
                show_default=False,
            ),
        ],
        None,
    ),
    "distill_weight": (Annotated[float, typer.Option("--distill-weight", help="Weight of the distillation term.")], 1.0),
    "seed": (
        Annotated[int, typer.Option("--seed", help="Seed of the data order, augmentation and initialisation (deterministic on the CPU).")],
        0,
    ),
    "img_size": (
        Annotated[Optional[int], typer.Option("--img-size", help="Training input size (default: the model's).", show_default=False)],
        None,
    ),
    "aug": (
        Annotated[bool, typer.Option("--aug/--no-aug", help="timm's training augmentation (random resized crop, flip, colour jitter).")],
        True,
    ),
    "workers": (
        Annotated[
            Optional[int],
            typer.Option("--workers", help="DataLoader worker processes (default: cores per process - 1).", show_default=False),
        ],
        None,
    ),
    "amp": (Annotated[bool, typer.Option("--amp", help="Mixed precision (CUDA only).")], False),
    "device": (o.Device, "auto"),
    "tag": (
        Annotated[
            Optional[str],
            typer.Option("--tag", help="The trained model's name in the store (default: the name of --out).", show_default=False),
        ],
        None,
    ),
    "retag": (o.Retag, False),
    "resume": (
        Annotated[
            Optional[Path],
            typer.Option(
                "--resume",
                help="Continue from OUT/last.pt exactly where it stopped (same options); a larger --steps/--epochs extends the run "
                "(its schedule re-planned for the new length from the resumed step).",
                show_default=False,
            ),
        ],
        None,
    ),
    "checkpoint_every": (
        Annotated[
            Optional[int],
            typer.Option("--checkpoint-every", help="Also write last.pt every N steps (always at each epoch's end).", show_default=False),
        ],
        None,
    ),
}


@guarded
@o.with_model_options(exclude=("tag",))  # train's --tag names the trained model
@o.with_options(TRAIN_OPTIONS, into="options")
def train(model: o.ModelName, options: dict = None, db: o.Db = None, as_json: o.Json = False) -> None:
    """Train a model for alignment: DCLS positions, Grad-CAM consistency, CA-Stream; checkpoints with lineage in the store.

    The neural harmonizer (--harmonize λ) trains the model's saliency towards human maps. Training images come from --data
    (labelled images) or, for --harmonize, from --dataset/--data-dir (images with human maps, read as score reads them).

    With --ca-stream only the stream trains (backbone, classifier and batch-norm statistics frozen), with the
    official recipe unless given (SGD momentum 0.9, lr 0.1, weight decay 1e-4, ×0.1 every 30 epochs); OUT/last.safetensors
    then holds the stream alone: score it with [bold]alignbench score MODEL --ca-stream --checkpoint OUT/last.safetensors[/].

    Several processes: [bold]torchrun --nproc_per_node N -m alignbench train ...[/] (DistributedDataParallel; gloo on the CPU).

    Example: [bold]alignbench train efficientnet_lite0 --dcls --data imagenet-samples-256/ --out runs/lite0-pos --steps 100 --positions-lr 0.01[/]
    """
    from alignbench.training import TrainRequest
    from alignbench.training import train as run_train

    request = TrainRequest.from_options(o.model_request(model, **options["model_options"]), options)
    main_process = os.environ.get("RANK", "0") == "0"
    bar = _progress_bar(enabled=main_process and sys.stderr.isatty() and not as_json)
    try:
        result = run_train(request, db=db, progress=_on_progress(bar, show_val=main_process and not as_json))
    finally:
        bar.stop()
    if not main_process:
        return
    if as_json:
        typer.echo(json.dumps(result.to_json(), default=str))
    else:
        stdout_console().print(_summary(result))


def _on_progress(bar: Progress, show_val: bool) -> Callable[[Any], None]:
    """The callback ``train`` reports to: each step moves ``bar``; each --val evaluation is a line (when ``show_val``)."""
    task: Any = None

    def on_progress(record) -> None:
        nonlocal task
        if record.event != "step":
            if show_val:
                bar.console.print(
                    f"step {record.step}: --val top-1 {record.top1:.4f} on {record.n_images} images"
                    + (" (best so far)" if record.best else "")
                )
            return
        fields = {"loss": f"{record.loss:.4f}", "accuracy": f"{record.accuracy:.3f}", "rate": f"{record.images_per_s:.1f} img/s"}
        if task is None:
            bar.start()
            task = bar.add_task("train", total=record.total_steps, completed=record.step - 1, **fields)
        bar.update(task, completed=record.step, **fields)

    return on_progress
