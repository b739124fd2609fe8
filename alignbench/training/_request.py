"""What a training run is asked to do (torch-free): its options, the methods and freeze modes as data.

``TrainRequest`` holds every option of ``alignbench train`` once; the CLI builds it from its options
of the same names (``TrainRequest.from_options``, the CLI's table ``TRAIN_OPTIONS``) and the library reads it. ``METHODS`` says which method a request is (what the store records as the trained model's
``origin``) and which parameters it trains by default; ``FREEZE_MODES`` says which parameters a
``--freeze`` choice leaves trainable. A new way of training (e.g. CA-Stream) adds one entry to each.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from alignbench.errors import TrainingError
from alignbench.models import ModelRequest
from alignbench.training import _ca_stream

# ConvNeXt-dcls engine.py: the positions' learning rate is the scheduled rate × 5.
POSITIONS_LR_FACTOR = 5.0
# DCLS v1 builds each element as a tent relu(1 − |i − p|), whose gradient the DCLS package takes as
# 0 at integer positions (abs'(0) = 0) — exactly where --init from-dense puts every element, so they
# could never move. Training first moves such coordinates this far off the grid (pixels): the kernel
# changes by this fraction of a tap, and the gradient is ±1 per tap from then on.
POSITIONS_OFFSET = 1e-3
# Pillai & Pirsiavash train ImageNet models with λ = 25 (README: `--lambda 25`).
PAPER_GC_LAMBDA = 25.0
# timm's step-based schedules (create_scheduler_v2 with step_on_epochs=False); 'plateau' steps on
# epochs only, and 'none' keeps the optimiser's rate.
SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")
# The name that trains on the images embedded in the package (alignbench/data/sample).
SAMPLE_DATA = "sample"
# --distill-from self: the teacher is the model training starts from, frozen (data without labels).
SELF_TEACHER = "self"
# The harmonizer's regulariser is the L2 term of its loss (loss.py: λ_w = 1e-5 · Σ ½‖w‖²), so the
# optimiser adds no weight decay of its own unless asked to.
HARMONIZER_RECIPE: Mapping[str, Any] = MappingProxyType({"opt": "adamw", "lr": 1e-4, "weight_decay": 0.0, "sched": "cosine"})

FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max (this module does not import torch)


def position_parameters(model: Any) -> Iterator[Any]:
    """The DCLS positions of ``model`` (each Dcls2d's P, and SIG for gauss), each shared tensor once."""
    seen: set[int] = set()
    for module in model.modules():
        if not hasattr(module, "dilated_kernel_size"):  # Dcls2d (and alignbench's subclasses)
            continue
        for parameter in (getattr(module, "P", None), getattr(module, "SIG", None)):
            if parameter is not None and id(parameter) not in seen:
                seen.add(id(parameter))
                yield parameter


def _classifier_parameters(model: Any) -> Iterator[Any]:
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        raise TrainingError(f"{type(model).__name__} has no timm get_classifier(); --freeze backbone needs a timm classifier")
    yield from get_classifier().parameters()


def _all_but_batch_norms(model: Any) -> Iterator[Any]:
    from torch.nn.modules.batchnorm import _BatchNorm  # torch only when a model is frozen

    norms = {id(p) for module in model.modules() if isinstance(module, _BatchNorm) for p in module.parameters()}
    yield from (p for p in model.parameters() if id(p) not in norms)


@dataclass(frozen=True)
class FreezeMode:
    """A ``--freeze`` choice: ``trainable(model)`` yields the parameters that train; the rest stay
    fixed (and so do the running statistics of batch-norm layers left with nothing to train)."""

    name: str
    description: str
    trainable: Callable[[Any], Iterator[Any]] = field(repr=False, compare=False)


FREEZE_MODES: dict[str, FreezeMode] = {
    mode.name: mode
    for mode in (
        FreezeMode("none", "every parameter trains", lambda model: iter(model.parameters())),
        FreezeMode(
            "norms",
            "every parameter trains but the batch-norm layers' (their running statistics fixed too: fine-tuning on "
            "another kind of image, a batch's statistics would replace the pre-training ones)",
            _all_but_batch_norms,
        ),
        FreezeMode("backbone", "only the classifier trains", _classifier_parameters),
        FreezeMode("all-but-positions", "only the DCLS positions (P, and SIG) train", position_parameters),
        FreezeMode(
            _ca_stream.FREEZE, "only the CA-Stream trains (backbone, classifier, batch-norm statistics fixed)", _ca_stream.stream_parameters
        ),
    )
}

# The hyper-parameters a method uses where the request leaves them None (the CLI's unset options).
GENERAL_RECIPE: Mapping[str, Any] = MappingProxyType({"opt": "adamw", "lr": 1e-4, "weight_decay": 0.05, "sched": "cosine"})


@dataclass(frozen=True)
class Method:
    """A way of training: the first method in ``METHODS`` whose ``applies`` holds names a request.

    ``name`` is what the store records as the trained model's ``origin``; ``default_freeze`` is the
    ``--freeze`` mode used when none is given; ``recipe`` the hyper-parameters it uses unless given."""

    name: str
    description: str
    applies: Callable[[TrainRequest], bool] = field(repr=False, compare=False)
    default_freeze: str = "none"
    recipe: Mapping[str, Any] = field(default_factory=lambda: GENERAL_RECIPE, repr=False, compare=False)


METHODS: tuple[Method, ...] = (
    Method(
        _ca_stream.METHOD,
        "the CA-Stream alone (Torres et al. 2024), cross-entropy through the frozen classifier",
        lambda request: request.model.ca_stream,
        default_freeze=_ca_stream.FREEZE,
        recipe=_ca_stream.RECIPE,
    ),
    Method(
        "harmonizer",
        "the neural harmonizer (Fel et al. 2022) of the DCLS positions: CE (or KL to --distill-from) + λ_w·L2 + λ·pyramid MSE to human maps",
        lambda request: request.harmonize is not None and request.model.dcls,
        default_freeze="all-but-positions",
        recipe=HARMONIZER_RECIPE,
    ),
    Method(
        "harmonizer",
        "the neural harmonizer (Fel et al. 2022): CE (or KL to --distill-from) + λ_w·L2 + λ·pyramid MSE to human maps",
        lambda request: request.harmonize is not None,
        recipe=HARMONIZER_RECIPE,
    ),
    Method(
        "gc-consistency", "cross-entropy + λ · Grad-CAM consistency (Pillai & Pirsiavash 2021)", lambda request: request.gc_consistency > 0
    ),
    Method(
        "dcls-finetune",
        "DCLS positions fine-tuned (and, with --freeze none, every weight)",
        lambda request: request.model.dcls,
        default_freeze="all-but-positions",
    ),
    Method("finetune", "cross-entropy fine-tuning", lambda request: True),
)


@dataclass(frozen=True)
class TrainRequest:
    """Every option of ``alignbench train`` (see ``alignbench train --help`` for each)."""

    model: ModelRequest
    data: Path | str | None  # an ImageFolder tree, the folder layout (images/ + labels.csv), or "sample"; or
    out: Path
    dataset: str | None = None  # a registry dataset with reference maps (--harmonize trains on its images and maps)
    data_dir: Path | None = None  # its files
    fixation_sigma: float | None = None  # an eye-tracking dataset's density blur (px); None: the dataset's default
    harmonize: float | None = None  # λ of the harmonizer's pyramid term; None = off (0: the control, distillation/CE only)
    val: Path | str | None = None
    steps: int | None = None  # optimiser steps; or
    epochs: int | None = None  # passes over --data (default 1 when neither is given)
    batch_size: int = 32  # images per step, over all processes
    opt: str | None = None  # None: the method's recipe (GENERAL_RECIPE, or e.g. CA-Stream's SGD)
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    sched: str | None = None
    warmup_steps: int = 0
    min_lr: float = 0.0
    positions_lr: float | None = None  # default POSITIONS_LR_FACTOR × lr
    positions_offset: float = POSITIONS_OFFSET  # v1 positions on the integer grid are moved this far first
    freeze: str | None = None  # default: the method's
    gc_consistency: float = 0.0  # λ; 0 = off
    maxpool: bool = False
    distill_from: str | None = None  # "dense", "self" or a model name
    distill_weight: float = 1.0
    seed: int = 0
    img_size: int | None = None  # default: the model's input size
    aug: bool = True  # timm's training augmentation (random resized crop, flip, colour jitter)
    workers: int | None = None
    amp: bool = False
    device: str = "auto"
    tag: str | None = None  # default: the name of --out
    retag: bool = False  # move the tag when it names a model of another run (a tag names one model)
    resume: Path | None = None
    checkpoint_every: int | None = None  # also write last.pt every N steps (always: each epoch's end)
    decay_epochs: float | None = None  # step / multistep schedules: decay every this many epochs (None: timm's default)
    decay_rate: float = 0.1

    @classmethod
    def from_options(cls, model: ModelRequest, options: Mapping[str, Any]) -> TrainRequest:
        """The request for ``model`` whose other fields are taken by name from ``options`` (the ``train``
        command's options; other names are left out, and so are fields ``options`` lacks): a new
        option is a field here and an entry of the command's ``TRAIN_OPTIONS``, nowhere else."""
        return cls(model=model, **{f.name: options[f.name] for f in fields(cls) if f.name != "model" and f.name in options})

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelRequest):
            object.__setattr__(self, "model", ModelRequest(str(self.model)))
        for name, value in self.method.recipe.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "out", Path(self.out).expanduser())
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if self.resume is not None:
            object.__setattr__(self, "resume", Path(self.resume).expanduser())

    @property
    def method(self) -> Method:
        return next(method for method in METHODS if method.applies(self))

    @property
    def freeze_mode(self) -> FreezeMode:
        return FREEZE_MODES[self.freeze or self.method.default_freeze]

    @property
    def effective_positions_lr(self) -> float:
        return self.positions_lr if self.positions_lr is not None else POSITIONS_LR_FACTOR * self.lr

    @property
    def effective_tag(self) -> str:
        return self.tag or self.out.resolve().name

    def validate(self) -> None:
        """Raise TrainingError naming the first option that cannot work (before anything is loaded)."""
        positive = {
            "--batch-size": self.batch_size,
            "--steps": self.steps,
            "--epochs": self.epochs,
            "--checkpoint-every": self.checkpoint_every,
            "--img-size": self.img_size,
        }
        for option, value in positive.items():
            if value is not None and value < 1:
                raise TrainingError(f"{option} must be at least 1, got {value}")
        if self.steps is not None and self.epochs is not None:
            raise TrainingError("give --steps or --epochs, not both")
        for option, value in {
            "--lr": self.lr,
            "--positions-lr": self.positions_lr,
            "--weight-decay": self.weight_decay,
            "--gc-consistency": self.gc_consistency,
            "--distill-weight": self.distill_weight,
            "--min-lr": self.min_lr,
            "--warmup-steps": self.warmup_steps,
            "--positions-offset": self.positions_offset,
        }.items():
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise TrainingError(f"{option} must be a finite number ≥ 0, got {value}")
        self._validate_data()
        for option, value in {"--lr": self.lr, "--positions-lr": self.positions_lr}.items():
            if value is not None and value > FLOAT32_MAX:  # torch's optimisers cannot even form the step
                raise TrainingError(
                    f"{option} {value:g} is beyond float32 (at most {FLOAT32_MAX:.4g}); give a learning rate the weights can take"
                )
        if self.sched not in SCHEDULES:
            raise TrainingError(f"unknown --sched {self.sched!r}; use one of {', '.join(SCHEDULES)}")
        freeze = self.freeze or self.method.default_freeze
        if freeze not in FREEZE_MODES:
            raise TrainingError(f"unknown --freeze {freeze!r}; use one of {', '.join(FREEZE_MODES)}")
        if freeze == "all-but-positions" and not self.model.dcls:
            raise TrainingError("--freeze all-but-positions trains DCLS positions: add --dcls")
        if self.model.ca_stream:
            self._validate_ca_stream(freeze)
        elif freeze == _ca_stream.FREEZE:
            raise TrainingError("--freeze all-but-stream trains a CA-Stream: add --ca-stream")
        if self.decay_epochs is not None and not (math.isfinite(self.decay_epochs) and self.decay_epochs > 0):
            raise TrainingError(f"--decay-epochs must be a positive number, got {self.decay_epochs}")
        cores = os.cpu_count() or 1
        if self.workers is not None and not 0 <= self.workers <= cores:
            raise TrainingError(
                f"--workers must be between 0 and {cores} (this machine's cores), got {self.workers}; 0 decodes the images in the main process"
            )
        if self.positions_lr is not None and not self.model.dcls:
            raise TrainingError(
                "--positions-lr is the learning rate of DCLS positions, which a dense model has none of: add --dcls, or drop it"
            )

    def _validate_data(self) -> None:
        """One way per concept: --data gives labelled images; --dataset (+ --data-dir) a dataset's images
        and human maps, for --harmonize."""
        if self.data is not None and self.dataset is not None:
            raise TrainingError("give --data (labelled images) or --dataset (images with human maps, for --harmonize), not both")
        if self.harmonize is not None:
            if not (math.isfinite(self.harmonize) and self.harmonize >= 0):
                raise TrainingError(f"--harmonize must be a finite λ ≥ 0 (the weight of the pyramid term), got {self.harmonize}")
            if self.dataset is None:
                raise TrainingError(
                    "--harmonize needs human maps: give --dataset NAME [--data-dir DIR] (a dataset with reference maps) instead of --data"
                )
            if self.gc_consistency > 0:
                raise TrainingError("--harmonize and --gc-consistency are two methods; train with one")
            if self.model.ca_stream:
                raise TrainingError("--harmonize trains a model's input gradient; with --ca-stream (a frozen backbone) drop one of them")
        elif self.dataset is not None:
            raise TrainingError("--dataset trains on a dataset's human maps with --harmonize λ; for labelled images alone use --data")
        if self.data is None and self.dataset is None:
            raise TrainingError("give --data (labelled images) or --dataset with --harmonize λ (images with human maps)")
        if self.data_dir is not None and self.dataset is None:
            raise TrainingError("--data-dir is where --dataset's files are; give --dataset NAME (or use --data for labelled images)")

    def _validate_ca_stream(self, freeze: str) -> None:
        """The stream trains alone, on cross-entropy (distillation may be added): the paper's protocol."""
        if freeze != _ca_stream.FREEZE:
            raise TrainingError(f"--ca-stream trains the stream alone with the backbone frozen; --freeze {freeze} does not apply")
        if self.gc_consistency > 0:
            raise TrainingError("--gc-consistency differentiates Grad-CAM of the pooled model; with --ca-stream drop it")
        if self.maxpool:
            raise TrainingError("--maxpool changes the global pooling, which the CA-Stream replaces; drop it")

    def recipe(self) -> dict[str, Any]:
        """What decides the trained weights (a --resume checkpoint must have been written with the same):
        the model, the data order and every hyper-parameter; not where files go or how many workers load them."""
        skip = {"out", "resume", "workers", "device", "tag", "retag", "checkpoint_every", "data", "val", "data_dir"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        values["model"] = self.model.to_json()
        values["model"].pop("tag", None)
        values["positions_lr"] = self.effective_positions_lr
        values["freeze"] = self.freeze_mode.name
        for key in ("dataset", "harmonize", "fixation_sigma"):  # absent when off: checkpoints written before these options still resume
            if values[key] is None:
                del values[key]
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["model"] = self.model.to_json()
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}
