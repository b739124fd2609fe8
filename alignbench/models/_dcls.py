"""Dense → DCLS: which convs a recipe replaces, the Dcls2d that replaces each, shared positions, init.

DCLS (Khalfaoui-Hassani et al., ICLR 2023) replaces a k×k kernel by ``kernel_count`` weighted
elements at learnable real positions P inside a D×D ("dilated kernel size") span. The conversion
keeps stride and output size: the Dcls2d pads by the dense padding plus (D − k) / 2, so the centre of
the D×D span sits where the centre of the k×k kernel sat.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from DCLS.construct.modules import Dcls2d
from timm.layers import Conv2dSame, get_same_padding, pad_same
from torch import nn

from alignbench.errors import AlignbenchWarning, ModelError
from alignbench.models._dcls_kernel import construct, trim_negligible
from alignbench.models._depthwise import depthwise_conv
from alignbench.models.specs import ConvSelector, DclsRecipe

# Plain convolutions only: subclasses such as timm's StdConv2d transform their weight in forward,
# which a Dcls2d would silently drop. Conv2dSame (TF "SAME" padding) is handled explicitly.
_CONVERTIBLE = (nn.Conv2d, Conv2dSame)


# ------------------------------------------------------------------------------- implementations

IMPLEMENTATIONS = ("fast", "reference")
IMPLEMENTATION_ENV = "ALIGNBENCH_DCLS_IMPL"
_chosen: list[str] = []  # innermost dcls_implementation() block last


def current_implementation() -> str:
    """ "fast" (alignbench's kernel cache and lean construction, the default) or "reference" (the
    dcls package's own forward): the innermost ``dcls_implementation`` block, else $ALIGNBENCH_DCLS_IMPL."""
    if _chosen:
        return _chosen[-1]
    name = os.environ.get(IMPLEMENTATION_ENV) or "fast"
    if name not in IMPLEMENTATIONS:
        raise ModelError(f"{IMPLEMENTATION_ENV}={name!r} is not one of {', '.join(IMPLEMENTATIONS)}; unset it or pick one")
    return name


@contextmanager
def dcls_implementation(name: str) -> Iterator[None]:
    """Run every DCLS layer inside the block with ``name``: "fast" or "reference" (``Dcls2d``'s own
    forward, which rebuilds the kernel from P on every call) — for tests and benchmarks."""
    if name not in IMPLEMENTATIONS:
        raise ModelError(f"unknown DCLS implementation {name!r}; choose {' or '.join(IMPLEMENTATIONS)}")
    _chosen.append(name)
    try:
        yield
    finally:
        _chosen.pop()


# On the CPU a depthwise conv runs in channels_last: oneDNN's NCHW depthwise kernels are slow
# forward above 9×9 and backward at every size (figures in the README, Performance). From 13×13 up
# its channels_last backward falls back too, where alignbench's own takes over (_depthwise).
_ONEDNN_DEPTHWISE_MAX = 11


class DclsConv(Dcls2d):
    """``Dcls2d`` whose forward convolves with a kernel built by alignbench (``_dcls_kernel``).

    Parameters frozen (or grad mode off): the kernel is built once per parameter version and kept,
    trimmed to the taps that are not negligible; any in-place change of weight, P or SIG bumps
    their version counters, so the next forward rebuilds it. With a gradient to compute, the lean
    construction runs on every forward. The cache is a plain attribute: not in the state_dict, and
    dropped by ``.to()``/``.half()``/... (``_apply``). ``dcls_implementation("reference")`` runs
    ``Dcls2d.forward`` instead.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._frozen: tuple[tuple, torch.Tensor] | None = None

    def _apply(self, fn, recurse=True):
        # ConstructKernel2d caches IDX/lim on the device of its first forward; after
        # model.to(other_device) those stale tensors would meet weights on the new device.
        self.DCK.IDX = None
        self.DCK.lim = None
        self._frozen = None
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__()
        return {**state, "_frozen": None}  # deepcopy/pickle: a cache, not state

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if current_implementation() == "reference":
            return super().forward(self._pad_for_reference(input))
        return self._convolve(input, self.kernel())

    def _pad_for_reference(self, input: torch.Tensor) -> torch.Tensor:
        return input

    # ---- the kernel

    def _parameters_state(self) -> tuple:
        """What the kernel depends on: the tensors themselves (held, so that no new tensor can take
        a freed one's id or address), their version counters, storage, dtype and device."""
        return tuple((t, t._version, t.data_ptr(), t.dtype, t.device) for t in (self.weight, self.P, self.SIG) if t is not None)

    def _cached_kernel(self) -> torch.Tensor | None:
        if self._frozen is None:
            return None
        state, kernel = self._frozen
        current = self._parameters_state()
        same = len(state) == len(current) and all(old[0] is new[0] and old[1:] == new[1:] for old, new in zip(state, current))
        return kernel if same else None

    def kernel(self) -> torch.Tensor:
        """The kernel this forward convolves with: centred in the D×D span, trimmed (h, w odd)."""
        tensors = [t for t in (self.weight, self.P, self.SIG) if t is not None]
        size = self.dilated_kernel_size[0]
        if self.weight.device.type == "meta":
            return self.weight.new_empty(*self.weight.shape[:2], size, size)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            self._frozen = None
            return construct(self.weight, self.P, self.SIG, self.version, size)
        kernel = self._cached_kernel()
        if kernel is None:
            # A tensor made in inference mode could not be saved for a later backward (Grad-CAM).
            with torch.inference_mode(False), torch.no_grad():
                kernel = trim_negligible(construct(self.weight, self.P, self.SIG, self.version, size))
            self._frozen = (self._parameters_state(), kernel)
        return kernel

    # ---- the convolution

    def _convolve(self, input: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        cpu_depthwise = input.device.type == "cpu" and self.groups == self.in_channels == self.out_channels
        if cpu_depthwise or (input.ndim == 4 and _is_channels_last(input)):
            input = input.contiguous(memory_format=torch.channels_last)
            kernel = self._kernel_channels_last(kernel)
        size = self.dilated_kernel_size[0]
        # The trimmed kernel starts (D − h) / 2 taps into the span: pad that much less.
        input, padding = self._pad(input, [(size - k) // 2 for k in kernel.shape[-2:]])
        if cpu_depthwise and max(kernel.shape[-2:]) > _ONEDNN_DEPTHWISE_MAX:
            return depthwise_conv(input, kernel, self.bias, self.stride, padding)
        return F.conv2d(input, kernel, self.bias, self.stride, padding, 1, self.groups)

    def _kernel_channels_last(self, kernel: torch.Tensor) -> torch.Tensor:
        converted = kernel.contiguous(memory_format=torch.channels_last)
        if self._frozen is not None and self._frozen[1] is kernel:
            self._frozen = (self._frozen[0], converted)  # convert a cached kernel once
        return converted

    def _pad(self, input: torch.Tensor, trim: list[int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """(input, conv padding) for a kernel trimmed by ``trim`` taps on each side (rows, cols)."""
        padding = [p - t for p, t in zip(self.padding, trim)]
        if min(padding) >= 0:
            return input, tuple(padding)
        # The trimmed window is narrower than the dense kernel: crop (negative pad) instead.
        (top, left) = padding
        return F.pad(input, (left, left, top, top)), (0, 0)


def _is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


class DclsConvSame(DclsConv):
    """DclsConv after timm's dynamic TF "SAME" padding for the dense kernel (``Conv2dSame``).

    The input is padded exactly as the dense conv padded it; the Dcls2d's own symmetric padding
    (D − k) / 2 then centres the dilated span on the dense kernel.
    """

    def __init__(self, *args, dense_kernel_size: tuple[int, int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dense_kernel_size = dense_kernel_size

    def _pad_for_reference(self, input: torch.Tensor) -> torch.Tensor:
        return pad_same(input, self.dense_kernel_size, self.stride)

    def _pad(self, input: torch.Tensor, trim: list[int]) -> tuple[torch.Tensor, tuple[int, int]]:
        # One F.pad for both: TF SAME for the dense kernel (as timm's pad_same), plus the span's
        # own (D − k) / 2, less the trim (negative values crop).
        pads = []
        for axis in (1, 0):  # F.pad wants (left, right, top, bottom)
            total = get_same_padding(input.shape[-2 + axis], self.dense_kernel_size[axis], self.stride[axis], 1)
            extra = self.padding[axis] - trim[axis]
            pads += [total // 2 + extra, total - total // 2 + extra]
        return F.pad(input, pads), (0, 0)


# --------------------------------------------------------------------------------------- recursion


def swap_modules(
    model: nn.Module,
    predicate: Callable[[str, nn.Module], bool],
    factory: Callable[[str, nn.Module], nn.Module],
    prefix: str = "",
) -> list[str]:
    """Replace in place every submodule where ``predicate(name, module)`` by ``factory(name, module)``.

    Recursion over ``named_children`` (as timm's ``freeze_batch_norm_2d``); a replaced module is not
    descended into. Returns the qualified names replaced, in module order.
    """
    replaced: list[str] = []
    for child_name, child in model.named_children():
        name = f"{prefix}.{child_name}" if prefix else child_name
        if predicate(name, child):
            setattr(model, child_name, factory(name, child))
            replaced.append(name)
        else:
            replaced += swap_modules(child, predicate, factory, name)
    return replaced


def dcls_layers(model: nn.Module) -> Iterator[tuple[str, Dcls2d]]:
    for name, module in model.named_modules():
        if isinstance(module, Dcls2d):
            yield name, module


# --------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class ConvTarget:
    """One dense conv to replace, with everything needed to build and init its Dcls2d."""

    name: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]  # dense static padding (0 for "SAME")
    same: bool  # timm Conv2dSame: dynamic TF padding
    bias: bool
    group: str  # positions are shared by targets with the same group

    @property
    def position_shape(self) -> tuple[int, int]:
        return self.out_channels, self.in_channels // self.groups


def is_convertible(module: nn.Module) -> bool:
    if type(module) not in _CONVERTIBLE:
        return False
    kh, kw = module.kernel_size
    return module.dilation == (1, 1) and module.padding_mode == "zeros" and kh % 2 == 1 and kw % 2 == 1 and (kh, kw) != (1, 1)


def selects(selector: ConvSelector, module: nn.Module) -> bool:
    """The recipe's predicate: does ``selector`` replace ``module``?"""
    if not is_convertible(module):
        return False
    if selector.depthwise and not (module.groups == module.in_channels == module.out_channels):
        return False
    return not selector.kernel_sizes or tuple(module.kernel_size) in selector.kernel_sizes


def stage_of(name: str, stage_pattern: str) -> str | None:
    match = re.search(stage_pattern, name)
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None)


def plan(
    model: nn.Module,
    recipe: DclsRecipe,
    stage_pattern: str,
    names: set[str] | None = None,
) -> list[ConvTarget]:
    """The convs the recipe replaces (or exactly ``names``, e.g. read from a checkpoint's ``.P`` keys).

    Positions are shared among the targets of one stage with the same (out, in/groups) shape: the
    paper's code starts a new shared P whenever in_channels grows, i.e. at each stage.
    """
    targets = []
    for name, module in model.named_modules():
        chosen = name in names if names is not None else selects(recipe.selector, module)
        if not chosen:
            continue
        if not is_convertible(module):
            raise ModelError(
                f"{name} ({type(module).__name__}, kernel {module.kernel_size}) cannot become a "
                "Dcls2d; the checkpoint does not fit this architecture"
            )
        size = recipe.dilated_kernel_size
        if max(module.kernel_size) > size:
            kh, kw = module.kernel_size
            raise ModelError(
                f"dilated kernel size {size} is smaller than the {kh}×{kw} kernel of {name}; "
                f"use --dilated-kernel-size {max(kh, kw)} or more"
            )
        stage = stage_of(name, stage_pattern) if recipe.share == "stage" else None
        shape = (module.out_channels, module.in_channels // module.groups)
        group = f"stage {stage} {shape[0]}x{shape[1]}" if stage is not None else name
        padding = module.padding
        if isinstance(padding, str):  # torch's "same"/"valid" (stride 1, odd kernel: symmetric)
            padding = tuple(k // 2 for k in module.kernel_size) if padding == "same" else (0, 0)
        targets.append(
            ConvTarget(
                name=name,
                in_channels=module.in_channels,
                out_channels=module.out_channels,
                groups=module.groups,
                kernel_size=tuple(module.kernel_size),
                stride=tuple(module.stride),
                padding=tuple(padding),
                same=isinstance(module, Conv2dSame),
                bias=module.bias is not None,
                group=group,
            )
        )
    unknown = sorted(set(names or ()) - {target.name for target in targets})
    if unknown:
        raise ModelError(
            f"the checkpoint has DCLS layers this architecture lacks ({', '.join(unknown[:3])}); is it a checkpoint of this model?"
        )
    if not targets:
        raise ModelError(
            f"the recipe ({recipe.selector.describe()}) replaces no convolution in this model; "
            "choose a model with such convs or another recipe"
        )
    return targets


# --------------------------------------------------------------------------------------- building


@contextmanager
def _quiet_dcls() -> Iterator[None]:
    # Dcls2d logs three root-logger warnings per layer about a CUDA-only kernel it falls back from;
    # for a 50-layer model that drowns the output and says nothing the user can act on.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def build_dcls(target: ConvTarget, recipe: DclsRecipe) -> DclsConv:
    size = recipe.dilated_kernel_size
    extra = tuple((size - k) // 2 for k in target.kernel_size)
    kwargs = dict(
        kernel_count=recipe.kernel_count,
        stride=target.stride,
        dilated_kernel_size=size,
        groups=target.groups,
        bias=target.bias,
        version=recipe.version,
        # DCLS's implicit-GEMM CUDA kernel assumes stride 1.
        use_implicit_gemm=target.stride == (1, 1),
    )
    with _quiet_dcls():
        if target.same:
            return DclsConvSame(
                target.in_channels,
                target.out_channels,
                padding=extra,
                dense_kernel_size=target.kernel_size,
                **kwargs,
            )
        padding = tuple(p + e for p, e in zip(target.padding, extra))
        return DclsConv(target.in_channels, target.out_channels, padding=padding, **kwargs)


def tie_positions(model: nn.Module, targets: list[ConvTarget]) -> int:
    """Make targets of one group share the first one's P (and SIG). Returns the number of groups."""
    modules = dict(model.named_modules())
    owners: dict[str, Dcls2d] = {}
    for target in targets:
        conv = modules[target.name]
        owner = owners.setdefault(target.group, conv)
        if owner is not conv:
            conv.P = owner.P
            if owner.SIG is not None:
                conv.SIG = owner.SIG
    return len(owners)


def convert(model: nn.Module, recipe: DclsRecipe, targets: list[ConvTarget]) -> dict[str, nn.Conv2d]:
    """Swap the targets for Dcls2d in place (random DCLS init); returns the dense convs removed."""
    by_name = {target.name: target for target in targets}
    removed: dict[str, nn.Conv2d] = {}

    def factory(name: str, dense: nn.Module) -> nn.Module:
        removed[name] = dense
        conv = build_dcls(by_name[name], recipe)
        return conv.to(device=dense.weight.device, dtype=dense.weight.dtype)

    replaced = swap_modules(model, lambda name, _: name in by_name, factory)
    missing = set(by_name) - set(replaced)
    if missing:  # a target nested inside another target cannot happen with plain convs
        raise ModelError(f"could not replace {sorted(missing)[0]}")
    return removed


# --------------------------------------------------------------------------------------- positions


def positions_to_p(rows: torch.Tensor, cols: torch.Tensor, version: str) -> torch.Tensor:
    """Stack (row, column) offsets from the kernel centre into Dcls2d's P for ``version``.

    DCLS ``ConstructKernel2d``: ``forward_v0`` compares P[0] with the row index of its grid, while
    ``forward_v1``/``forward_vgauss`` subtract P from ``IDX`` whose channel 0 is the column index.
    """
    first, second = (rows, cols) if version == "v0" else (cols, rows)
    return torch.stack((first, second))


def p_to_positions(p: torch.Tensor, version: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) offsets from the kernel centre stored in P (inverse of positions_to_p)."""
    return (p[0], p[1]) if version == "v0" else (p[1], p[0])


def position_limit(conv: Dcls2d) -> int:
    """How far from the span centre an element may sit: DCLS's clamp_parameters uses D // 2."""
    return conv.dilated_kernel_size[0] // 2


@torch.no_grad()
def clamp_positions(model: nn.Module) -> int:
    """Clamp every DCLS layer's positions into its dilated kernel, in place; returns how many
    coordinates moved.

    What DCLS training does after every optimiser step (ConvNeXt-dcls engine.py calls the
    model's ``clamp_parameters``: ``P.clamp_(-lim, lim)``, lim = dilated_kernel_size // 2), so
    training code calls it after each ``optimizer.step()``. Shared positions are clamped once.
    """
    moved, seen = 0, set()
    for _, conv in dcls_layers(model):
        if id(conv.P) in seen:
            continue
        seen.add(id(conv.P))
        limit = position_limit(conv)
        outside = conv.P.abs() > limit
        if bool(outside.any()):
            moved += int(outside.sum())
            conv.P.clamp_(-limit, limit)
    return moved


# A checkpoint's element beyond the span by up to this many pixels was still partly inside it —
# e.g. an EMA of positions taken before the step's clamp; further out it never was.
_CLAMPABLE_OVERSHOOT = 1.0


def check_checkpoint_positions(model: nn.Module, what: str) -> None:
    """Positions read from a checkpoint lie in the dilated kernel, else: up to one pixel beyond it
    they are clamped with a warning naming the layers; further out the checkpoint is refused."""
    overshoot = {}
    for name, conv in dcls_layers(model):
        if not bool(torch.isfinite(conv.P.detach()).all()):
            raise ModelError(f"{what}: positions of {name} are NaN or ±inf; the training that wrote it diverged: use an earlier checkpoint")
        beyond = float(conv.P.detach().abs().max()) - position_limit(conv) if conv.P.numel() else 0.0
        if beyond > 0:
            overshoot[name] = beyond
    if not overshoot:
        return
    size = next(conv for _, conv in dcls_layers(model)).dilated_kernel_size[0]
    worst = max(overshoot, key=overshoot.get)
    names = ", ".join(list(overshoot)[:3]) + (f" (+{len(overshoot) - 3} more)" if len(overshoot) > 3 else "")
    if overshoot[worst] > _CLAMPABLE_OVERSHOOT:
        raise ModelError(
            f"{what}: positions of {worst} lie {overshoot[worst]:.2f} px outside the {size}×{size} dilated "
            "kernel; was the checkpoint trained with a larger --dilated-kernel-size?"
        )
    clamp_positions(model)
    warnings.warn(
        f"{what}: positions of {names} lay up to {overshoot[worst]:.3g} px outside the {size}×{size} "
        "dilated kernel; clamped into it, as DCLS training does after every step",
        AlignbenchWarning,
        stacklevel=3,
    )


def dcls_kernel(conv: Dcls2d) -> torch.Tensor:
    """The dense D×D kernel of the dcls package's own construction, shape (out, in/groups, D, D)."""
    return conv.DCK(conv.weight, conv.P, conv.SIG)


def embed_dense(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A k×k kernel zero-padded to the centre of a size×size span."""
    kh, kw = weight.shape[-2:]
    top, left = (size - kh) // 2, (size - kw) // 2
    out = weight.new_zeros(*weight.shape[:-2], size, size)
    out[..., top : top + kh, left : left + kw] = weight
    return out


def _centre_first_order(size: int) -> torch.Tensor:
    """Grid positions of a size×size span, nearest to the centre first (Chebyshev, then Euclid)."""
    offsets = torch.arange(size) - size // 2
    rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
    rank = torch.maximum(rows.abs(), cols.abs()) * (2 * size * size) + rows**2 + cols**2
    return torch.sort(rank.flatten(), stable=True).indices


@torch.no_grad()
def init_from_dense(
    model: nn.Module,
    targets: list[ConvTarget],
    dense: dict[str, nn.Conv2d],
    recipe: DclsRecipe,
) -> float:
    """Put each Dcls2d's elements on the integer grid with the dense weights; return the max kernel error.

    Per group of convs sharing P, each (out, in) slice keeps the ``kernel_count`` grid positions
    with the largest summed |weight| over the group; when kernel_count ≥ k² that is every dense tap
    and the Dcls2d computes the dense function (v0 and v1 exactly; gauss up to its minimum width
    0.27). Spare elements sit just outside the dense kernel with weight 0, ready to be trained.
    Returns max over layers of ||K_dcls − K_dense|| / ||K_dense||.
    """
    size, count = recipe.dilated_kernel_size, recipe.kernel_count
    modules = dict(model.named_modules())
    groups: dict[str, list[ConvTarget]] = {}
    for target in targets:
        groups.setdefault(target.group, []).append(target)

    order = _centre_first_order(size)
    worst = 0.0
    for members in groups.values():
        embedded = [embed_dense(dense[t.name].weight.float(), size).flatten(-2) for t in members]
        score = torch.stack(embedded).abs().sum(0)[..., order]  # ties → nearest the centre
        chosen = order[torch.sort(-score, dim=-1, stable=True).indices[..., :count]]
        rows = (chosen // size - size // 2).float()
        cols = (chosen % size - size // 2).float()
        owner = modules[members[0].name]
        owner.P.copy_(positions_to_p(rows, cols, recipe.version))
        if owner.SIG is not None:
            owner.SIG.zero_()  # narrowest Gaussian DCLS allows (|SIG| + 0.27)
        for target, flat in zip(members, embedded):
            conv = modules[target.name]
            kept = torch.gather(flat, -1, chosen)
            conv.weight.copy_(kept)
            if target.bias:
                conv.bias.copy_(dense[target.name].bias)
            if recipe.version == "gauss":  # the Gaussian spreads each element: measure the kernel
                error = (dcls_kernel(conv) - flat.unflatten(-1, (size, size))).norm()
            else:  # elements sit exactly on the grid: the error is the taps left out
                error = flat.scatter(-1, chosen, 0.0).norm()
            worst = max(worst, float(error / flat.norm().clamp_min(1e-12)))
    return worst


@torch.no_grad()
def init_random(model: nn.Module, targets: list[ConvTarget]) -> None:
    """The paper's init of new Dcls2d weights: N(0, 0.02), bias 0 (P, SIG: Dcls2d's own init)."""
    modules = dict(model.named_modules())
    for target in targets:
        conv = modules[target.name]
        nn.init.normal_(conv.weight, std=0.02)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def count_after(model: nn.Module, targets: list[ConvTarget], recipe: DclsRecipe) -> int:
    """Parameters of ``model`` (dense, may live on the meta device) once the targets are converted."""
    modules = dict(model.named_modules())
    total = sum(p.numel() for p in model.parameters())
    position_tensors = 2 if recipe.version == "gauss" else 1  # P, and SIG for gauss
    seen_groups: set[str] = set()
    for target in targets:
        total -= sum(p.numel() for p in modules[target.name].parameters())
        out_channels, in_per_group = target.position_shape
        elements = out_channels * in_per_group * recipe.kernel_count
        total += elements + (out_channels if target.bias else 0)
        if target.group not in seen_groups:
            seen_groups.add(target.group)
            total += position_tensors * 2 * elements  # 2 coordinates per element
    return total


def effective_span(conv: Dcls2d, version: str) -> int:
    """Largest extent (rows or columns) the elements actually cover, in pixels."""
    rows, cols = p_to_positions(conv.P.detach(), version)
    # v0/v1 spread an element over its two neighbouring integers along each axis.
    spans = [int(torch.ceil(axis.max()) - torch.floor(axis.min())) + 1 for axis in (rows, cols)]
    return max(spans)
