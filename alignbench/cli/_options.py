"""Options shared by several commands, defined once as ``Annotated`` aliases (typer docs_src/one_file_per_command)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from alignbench._utils.precision import PRECISIONS
from alignbench.cli._basic_options import Db, Device, Json  # noqa: F401 - re-exported: every command's `o.Db`
from alignbench.datasets import DATASETS, PROTOCOLS
from alignbench.explainers import HEAD_FUSIONS, METHODS, check_params
from alignbench.models.specs import DCLS_VERSIONS, INIT_MODES

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.models import ModelRequest

# Choices are read from the registries (never a second hand-written list) and validated by the
# library, whose errors are one line; Typer's Enum choices would print a multi-line box instead.

ModelName = Annotated[str, typer.Argument(help="Registry name (see `alignbench models`) or any timm model name.", show_default=False)]
OptionalModelName = Annotated[
    Optional[str],
    typer.Argument(help="Registry name or timm model name; omitted: the embedded default (efficientnet_lite0).", show_default=False),
]
Dcls = Annotated[bool, typer.Option("--dcls", help="Use the model with its convolutions replaced by DCLS (per the registry recipe).")]
Checkpoint = Annotated[
    Optional[Path],
    typer.Option(
        "--checkpoint",
        help="A state_dict for the timm model (after conversion when --dcls); original-repository checkpoints are remapped. "
        "With --ca-stream: the stream's checkpoint.",
        show_default=False,
    ),
]
Head = Annotated[
    Optional[Path],
    typer.Option(
        "--head",
        help="The linear classifier of an encoder-only --checkpoint (a MoCo v3 pre-training checkpoint): "
        "a linear-probe checkpoint or a {'weight', 'bias'} file.",
        exists=False,
        dir_okay=False,
        show_default=False,
    ),
]
Tag = Annotated[
    Optional[str],
    typer.Option(
        "--tag",
        help="A name for the model in the store; --tag moco-v3 also declares a --checkpoint's origin "
        "(its eval transform) where the file does not show it.",
        show_default=False,
    ),
]
Retag = Annotated[
    bool,
    typer.Option("--retag", help="Move --tag to this model when it already names another one (a tag names one model)."),
]
CaStream = Annotated[
    bool,
    typer.Option(
        "--ca-stream",
        help="Use the model with a CA-Stream (a class token cross-attending to every stage) in place of global "
        "average pooling; --checkpoint is then the stream's checkpoint (only stream parameters).",
    ),
]
BackboneCheckpoint = Annotated[
    Optional[Path],
    typer.Option(
        "--backbone-checkpoint",
        help="With --ca-stream: the backbone's own state_dict (dense, or DCLS after conversion) when it is not the model's usual weights.",
        show_default=False,
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help=f"Forward passes in {', '.join(PRECISIONS)} (autocast; maps and metrics stay float32). Part of the run key unless fp32.",
    ),
]
Explainer = Annotated[str, typer.Option("--explainer", help=f"Explanation method: {', '.join(METHODS)} (aliases: threshold, ...).")]
Threshold = Annotated[
    Optional[float],
    typer.Option("--threshold", help="threshold-gradcam: the floor after min-max (default 0.3).", show_default=False),
]
Layer = Annotated[
    Optional[int],
    typer.Option(
        "--layer",
        help="The block, 0 the first, negative from the end (default -1: the last): raw-attention's attention; "
        "a CAM's patch tokens on a ViT/DeiT (the block's norm1).",
        show_default=False,
    ),
]


def _param(method: str, name: str) -> Any:
    """A method's declared parameter (``MethodSpec.params``): its default and choices in the help."""
    return next(p for p in METHODS[method].params if p.name == name)


# --ig-steps, not --steps: `score --steps` is the deletion/insertion curves' steps, and score takes every explainer option
IgSteps = Annotated[
    Optional[int],
    typer.Option(
        "--ig-steps",
        help=f"integrated-gradients: points on the path from the baseline (default {_param('integrated-gradients', 'ig_steps').default}).",
        show_default=False,
    ),
]
Baseline = Annotated[
    Optional[str],
    typer.Option(
        "--baseline",
        help=f"integrated-gradients: the path's start, {' | '.join(_param('integrated-gradients', 'baseline').choices)} "
        "(the image Gaussian-blurred, sigma 5% of its shorter side; default black).",
        show_default=False,
    ),
]
Samples = Annotated[
    Optional[int],
    typer.Option(
        "--samples", help=f"smoothgrad: noisy copies per image (default {_param('smoothgrad', 'samples').default}).", show_default=False
    ),
]
Noise = Annotated[
    Optional[float],
    typer.Option(
        "--noise",
        help=f"smoothgrad: the noise's standard deviation as a fraction of the image's value range (default {_param('smoothgrad', 'noise').default}).",
        show_default=False,
    ),
]
Window = Annotated[
    Optional[int],
    typer.Option(
        "--window",
        help=f"occlusion: the occluding square's side in pixels (default {_param('occlusion', 'window').default}).",
        show_default=False,
    ),
]
Stride = Annotated[
    Optional[int],
    typer.Option(
        "--stride",
        help=f"occlusion: the square's step in pixels, at most --window (default {_param('occlusion', 'stride').default}).",
        show_default=False,
    ),
]
HeadFusion = Annotated[
    Optional[str],
    typer.Option(
        "--head-fusion",
        help=f"rollout / raw-attention: how the heads' attention is fused, {' | '.join(HEAD_FUSIONS)} (default mean).",
        show_default=False,
    ),
]
DiscardRatio = Annotated[
    Optional[float],
    typer.Option(
        "--discard-ratio",
        help="rollout: the fraction in [0, 1) of each fused attention matrix's lowest entries set to zero (vit-explain; default 0).",
        show_default=False,
    ),
]
Dataset = Annotated[str, typer.Option("--dataset", help=f"Dataset: {', '.join(DATASETS)}.")]
FixationSigma = Annotated[
    Optional[float],
    typer.Option(
        "--fixation-sigma",
        metavar="PX",
        help="Eye-tracking datasets (" + ", ".join(n for n, s in DATASETS.items() if s.has_fixations) + "): the Gaussian, in pixels "
        "of the image, that blurs the fixations into the reference density (default: 0.03 of the image's longer side). "
        "Part of the dataset's identity: each sigma is its own run.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        help="Dataset files (ClickMe shards, folder, ImageNet val JPEGs, fixations folder, NUS scene set).",
        show_default=False,
    ),
]
Protocol = Annotated[
    str,
    typer.Option(
        "--protocol", help=f"{' or '.join(PROTOCOLS)}: aligned = heatmap and input share one geometry; paper = the published pipeline."
    ),
]

# The DCLS recipe overrides. Choices built from the registry, never a second list.
DclsVersion = Enum("DclsVersion", {version: version for version in DCLS_VERSIONS}, type=str)
InitMode = Enum("InitMode", {mode.replace("-", "_"): mode for mode in INIT_MODES}, type=str)
KernelCount = Annotated[
    Optional[int], typer.Option("--kernel-count", help="Elements per kernel (default: the registry recipe).", show_default=False)
]
DilatedKernelSize = Annotated[
    Optional[int],
    typer.Option("--dilated-kernel-size", help="Odd span the elements may cover (default: the registry recipe).", show_default=False),
]
Version = Annotated[
    Optional[DclsVersion], typer.Option("--version", help="Dcls2d kernel construction (default: the registry recipe).", show_default=False)
]
Init = Annotated[
    Optional[InitMode],
    typer.Option(
        "--init",
        help="checkpoint (published, or --checkpoint), from-dense, or random (default: checkpoint when there is one, else from-dense).",
        show_default=False,
    ),
]


Pretrained = Annotated[
    bool,
    typer.Option("--pretrained/--no-pretrained", help="Start from the model's pretrained weights, or from a seeded random initialisation."),
]

# A table of options: parameter -> (Annotated alias, default); `with_options` splices one into a
# command. REQUIRED is the default of an option that must be given.
OptionTable = Mapping[str, tuple[Any, Any]]
REQUIRED = inspect.Parameter.empty

# Every option of the model a command takes (ModelRequest's fields, as the CLI spells them).
# `with_model_options` gives them to a command, `model_request` makes the request: a new model
# option is added here, to `ModelRequest`, and nowhere else.
MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "dcls": (Dcls, False),
    "checkpoint": (Checkpoint, None),
    "head": (Head, None),
    "tag": (Tag, None),
    "ca_stream": (CaStream, False),
    "backbone_checkpoint": (BackboneCheckpoint, None),
    "version": (Version, None),
    "kernel_count": (KernelCount, None),
    "dilated_kernel_size": (DilatedKernelSize, None),
    "init": (Init, None),
    "pretrained": (Pretrained, True),
}


# The explainers' parameters as options: each is a parameter of some methods (``MethodSpec.params``),
# checked against the method's declaration by ``explainer_params``.
EXPLAINER_OPTIONS: dict[str, tuple[Any, Any]] = {
    "threshold": (Threshold, None),
    "layer": (Layer, None),
    "head_fusion": (HeadFusion, None),
    "discard_ratio": (DiscardRatio, None),
    "ig_steps": (IgSteps, None),
    "baseline": (Baseline, None),
    "samples": (Samples, None),
    "noise": (Noise, None),
    "window": (Window, None),
    "stride": (Stride, None),
}


def with_options(table: OptionTable, *, into: str) -> Callable[[Callable], Callable]:
    """Give a command a table of options: its parameter ``into`` (a dict) stands, in its signature,
    for the options of ``table`` at that place (in the table's order), and receives their values by name."""

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func, eval_str=True)
        parameters = []
        for parameter in signature.parameters.values():
            if parameter.name != into:
                parameters.append(parameter)
                continue
            parameters += [
                inspect.Parameter(name, parameter.kind, annotation=alias, default=default) for name, (alias, default) in table.items()
            ]

        @functools.wraps(func)
        def command(*args, **kwargs):
            options = {name: kwargs.pop(name) for name in table if name in kwargs}
            return func(*args, **{into: options}, **kwargs)

        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return command

    return decorate


def with_model_options(*, exclude: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Give a command every model option (``MODEL_OPTIONS`` but ``exclude``, e.g. an option the command
    spells otherwise) as its parameter ``model_options`` (``with_options``)."""
    return with_options({name: option for name, option in MODEL_OPTIONS.items() if name not in exclude}, into="model_options")


def with_explainer_options() -> Callable[[Callable], Callable]:
    """Give a command every explainer option (``EXPLAINER_OPTIONS``) as its parameter ``explainer_options``."""
    return with_options(EXPLAINER_OPTIONS, into="explainer_options")


def model_request(
    name: str,
    *,
    dcls: bool = False,
    checkpoint: Optional[Path] = None,
    ca_stream: bool = False,
    backbone_checkpoint: Optional[Path] = None,
    version: Optional[Enum | str] = None,
    init: Optional[Enum | str] = None,
    **options,
) -> ModelRequest:
    """The ``ModelRequest`` of a command's model options (the one place they become a request).

    ``--checkpoint`` is the weights of the model asked for: with ``--ca-stream``, the stream's
    (``ModelRequest.stream_checkpoint``), and ``--backbone-checkpoint`` the backbone's.
    """
    from alignbench.errors import ModelError
    from alignbench.models import ModelRequest

    options.update(version=getattr(version, "value", version), init=getattr(init, "value", init))  # the choices' Enums
    if ca_stream:
        return ModelRequest(name, dcls=dcls, checkpoint=backbone_checkpoint, ca_stream=True, stream_checkpoint=checkpoint, **options)
    if backbone_checkpoint is not None:
        raise ModelError(
            "--backbone-checkpoint is the weights under a CA-Stream and needs --ca-stream; "
            "without a stream pass the model's weights as --checkpoint"
        )
    return ModelRequest(name, dcls=dcls, checkpoint=checkpoint, **options)


def explainer_params(method: str, **options) -> dict:
    """The explainer parameters a command was given (``threshold=..., layer=...``), checked against the
    method's declared parameters (``MethodSpec.params``, as the library checks them): options not passed
    (None) are left out, so the method's defaults apply. ExplainerError (one line) for a parameter the
    method does not take or a value out of its range or choices."""
    given = {name: value for name, value in options.items() if value is not None}
    return check_params(method, given, fill_defaults=False)[1]
