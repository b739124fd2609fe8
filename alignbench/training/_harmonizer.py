"""The neural harmonizer (Fel, Felipe, Linsley & Serre, NeurIPS 2022): training a model's saliency towards human maps.

Transcribed from serre-lab/Harmonization (``harmonization/training/loss.py`` and ``pyramid.py``,
TensorFlow), operation by operation, in NCHW:

    saliency  = mean_c ∂(Σ_i logits_i · onehot(label_i))/∂images   signed, kept in the graph (tape in a tape)
    s, h      = standardize_cut(saliency), standardize_cut(human)  (m − mean)/(std + 1e-5), ReLU; per map,
                                                                  population std (tf.math.reduce_std)
    h         ← h / (max h + 1e-6) · (stop_gradient(max s) + 1e-6)
    pyramid   = mean over 5 levels of reduce_mean((P_l(s) − P_l(h))² · has_map)   P_0 = the map, P_l+1 =
                5×5 binomial kernel at stride 2 with 'SAME' padding (TF: 1 before / 2 after for even sizes)
    loss      = CE(label smoothing 0.1, mean over the batch) + λ_w · Σ_w ½‖w‖² + λ · pyramid

Reductions as TF makes them: ``_mse_with_tokens`` is one ``reduce_mean`` over every pixel of every
image of the level, images without a map (``has_map`` 0, their ``tokens``) included in the count;
the levels are then averaged; ``tf.nn.l2_loss`` is Σ w²/2 per variable, summed over
``model.trainable_variables`` whose names contain none of 'bn/', 'normalization', 'embed', 'Norm',
'norm', 'class_token' (here: parameters that require grad, by their torch names; timm spells batch
norms ``bn1``, ViT's class token ``cls_token``).

With the logits of a frozen teacher (``--distill-from``, for data without labels such as scenes),
the cross-entropy is replaced by KL(teacher ‖ student) (as ``Distillation``) and the label whose
saliency is trained is the teacher's top-1.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignbench.errors import TrainingError
from alignbench.training._double_backward import grouped_conv_double_backward
from alignbench.training._objective import CrossEntropy, Distillation, Forward, teacher_logits
from alignbench.training._request import TrainRequest, position_parameters

# loss.py: CategoricalCrossentropy(label_smoothing=0.1), lambda_weights=1e-5, lambda_harmonization=1.0
LABEL_SMOOTHING = 0.1
LAMBDA_WEIGHTS = 1e-5
LEVELS = 5  # pyramidal_mse_with_tokens(nb_levels=5)
STANDARDIZE_EPSILON = 1e-5  # standardize_cut(epsilon=1e-5)
MAX_EPSILON = 1e-6  # the "+ 1e-6" of _hm_max and _sa_max
# loss.py's filter of model.trainable_variables for the weight term, plus timm's name of the class token.
# ('bn/' → 'bn': timm's batch norms are bn1, bn2, ...; 'normalization' contains 'norm')
NOT_WEIGHT_DECAYED = ("bn", "norm", "Norm", "embed", "class_token", "cls_token")

# pyramid.py _binomial_kernel: outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
BINOMIAL_KERNEL = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0


def standardize_cut(maps: Tensor, epsilon: float = STANDARDIZE_EPSILON) -> Tensor:
    """ReLU((m − mean)/(std + ε)) per map [B, H, W]; std is the population std (TF's reduce_std)."""
    means = maps.mean(dim=(-2, -1), keepdim=True)
    stds = maps.std(dim=(-2, -1), keepdim=True, correction=0)
    return torch.relu((maps - means) / (stds + epsilon))


def same_padding(size: int, kernel: int = 5, stride: int = 2) -> tuple[int, int]:
    """TF's 'SAME' padding of one dimension: output ceil(size/stride), the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def downsample(maps: Tensor) -> Tensor:
    """pyramid._downsample: the binomial kernel at stride 2, 'SAME' padding with zeros, [B, H, W] → [B, ⌈H/2⌉, ⌈W/2⌉]."""
    top, bottom = same_padding(maps.shape[-2])
    left, right = same_padding(maps.shape[-1])
    kernel = BINOMIAL_KERNEL.to(device=maps.device, dtype=maps.dtype)[None, None]
    return F.conv2d(F.pad(maps[:, None], (left, right, top, bottom)), kernel, stride=2)[:, 0]


def pyramid(maps: Tensor, levels: int = LEVELS) -> list[Tensor]:
    """The map and ``levels`` − 1 successive downsamplings (pyramidal_representation computes one more,
    which pyramidal_mse_with_tokens never reads)."""
    out = [maps]
    for _ in range(levels - 1):
        out.append(downsample(out[-1]))
    return out


def pyramidal_mse(saliency: Tensor, human: Tensor, has_map: Tensor, levels: int = LEVELS) -> Tensor:
    """pyramidal_mse_with_tokens: per level the mean over batch and pixels of the squared difference
    times each image's flag, then the mean over levels."""
    tokens = has_map.to(saliency.dtype)[:, None, None]
    per_level = [((a - b).square() * tokens).mean() for a, b in zip(pyramid(saliency, levels), pyramid(human, levels))]
    return torch.stack(per_level).mean()


def rescale_to_saliency(human: Tensor, saliency: Tensor) -> Tensor:
    """loss.py's re-normalisation: each standardised human map divided by (its max + 1e-6) and multiplied
    by stop_gradient(max of the standardised saliency) + 1e-6."""
    human_max = human.amax(dim=(-2, -1), keepdim=True) + MAX_EPSILON
    saliency_max = saliency.detach().amax(dim=(-2, -1), keepdim=True) + MAX_EPSILON
    return human / human_max * saliency_max


def harmonization_term(saliency: Tensor, human_maps: Tensor, has_map: Tensor, levels: int = LEVELS) -> Tensor:
    """The pyramid MSE between the standardised-cut saliency and the human maps rescaled to its maximum."""
    saliency = standardize_cut(saliency)
    human = rescale_to_saliency(standardize_cut(human_maps), saliency)
    return pyramidal_mse(saliency, human, has_map, levels)


def saliency_maps(logits: Tensor, images: Tensor, labels: Tensor, *, create_graph: bool = True) -> Tensor:
    """mean over colour channels of ∂(Σ_i logits_i[label_i])/∂images, with its sign, [B, H, W]; with
    ``create_graph`` it stays differentiable in the parameters (the double backward)."""
    score = logits.gather(1, labels.view(-1, 1)).sum()
    # the graph is kept either way: the loss's own backward runs through it afterwards
    (gradient,) = torch.autograd.grad(score, images, create_graph=create_graph, retain_graph=True)
    return gradient.float().mean(dim=1)


def weight_l2(model: nn.Module) -> Tensor:
    """Σ ½‖w‖² (tf.nn.l2_loss) over the trainable parameters whose names contain none of NOT_WEIGHT_DECAYED.

    DCLS positions (P, SIG) are left out: they are coordinates in the dilated kernel, not weights (the
    TF code has none); ½‖P‖² would pull every element towards the kernel centre, and the optimiser's
    param_groups give them no weight decay either. With 374,272 positions on efficientnet_lite0 the term
    was ~5 (× 1e-5), larger than the pyramid term, and moved the positions on its own."""
    positions = {id(parameter) for parameter in position_parameters(model)}
    terms = [
        (parameter * parameter).sum() / 2
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and id(parameter) not in positions and not any(part in name for part in NOT_WEIGHT_DECAYED)
    ]
    if not terms:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.stack([term.float() for term in terms]).sum()


def map_flags(human_maps: Tensor, has_map: Tensor | None) -> tuple[Tensor, Tensor]:
    """(maps, flags): ``has_map`` as float [B] (None: 1 where the map is finite everywhere), and the maps
    with zeros where the flag is 0 (their term is multiplied by 0, which must not meet a NaN)."""
    finite = torch.isfinite(human_maps).flatten(1).all(dim=1)
    flags = finite.float() if has_map is None else torch.as_tensor(has_map, device=human_maps.device).float().view(-1)
    if flags.shape != (human_maps.shape[0],):
        raise TrainingError(f"has_map must have one flag per image ({human_maps.shape[0]}), got shape {tuple(flags.shape)}")
    if bool(((flags != 0) & ~finite).any()):
        raise TrainingError("a human map flagged has_map = 1 is not finite; flag it 0 (the image then trains without a map)")
    maps = torch.where((flags != 0)[:, None, None], human_maps, torch.zeros_like(human_maps))
    return maps, flags


def classification_term(logits: Tensor, labels: Tensor, teacher: Tensor | None, label_smoothing: float) -> tuple[str, Tensor]:
    """('ce', CE with label smoothing, batch mean) or, with teacher logits, ('distill', KL(teacher ‖ student), batch mean)."""
    if teacher is not None:
        student = F.log_softmax(logits.float(), dim=1)
        return "distill", F.kl_div(student, F.log_softmax(teacher.float(), dim=1), log_target=True, reduction="batchmean")
    return "ce", F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def harmonizer_loss(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None,
    human_maps: Tensor,
    has_map: Tensor | None = None,
    *,
    lambda_harmonization: float = 1.0,
    lambda_weights: float = LAMBDA_WEIGHTS,
    levels: int = LEVELS,
    label_smoothing: float = LABEL_SMOOTHING,
    teacher_logits: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The harmonizer's loss of one batch (see the module docstring) and its parts, each before its weight
    (``ce`` or ``distill``, ``weights``, ``harmonization``; detached).

    ``images`` [B, 3, H, W] model inputs; ``labels`` [B] class indices (None with ``teacher_logits``,
    whose top-1 is then the label); ``human_maps`` [B, H, W] at the input size; ``has_map`` [B] 1 where
    the image has a human map (None: where the map is finite). The model is called as it is (its
    train/eval mode is the caller's, as TF's ``model(images, training=True)``).
    """
    if teacher_logits is not None and labels is not None:
        raise TrainingError("give labels or teacher_logits (whose top-1 is the label), not both")
    if teacher_logits is None and labels is None:
        raise TrainingError("harmonizer_loss needs labels, or teacher_logits for images without labels")
    if images.ndim != 4 or human_maps.shape != (images.shape[0], *images.shape[-2:]):
        raise TrainingError(f"human_maps must be [B, H, W] = {(images.shape[0], *images.shape[-2:])}, got {tuple(human_maps.shape)}")
    human_maps, flags = map_flags(human_maps, has_map)
    labels = teacher_logits.argmax(dim=1) if teacher_logits is not None else torch.as_tensor(labels, device=images.device).long().view(-1)
    if labels.shape != (images.shape[0],):
        raise TrainingError(f"labels must be [B] = [{images.shape[0]}] class indices, got shape {tuple(labels.shape)}")
    with torch.enable_grad(), grouped_conv_double_backward():
        images = images.detach().requires_grad_(True)
        logits = model(images)
        saliency = saliency_maps(logits, images, labels, create_graph=True)
        harmonization = harmonization_term(saliency, human_maps.float(), flags, levels)
        name, classification = classification_term(logits, labels, teacher_logits, label_smoothing)
        weights = weight_l2(model)
        loss = classification + weights * lambda_weights + harmonization * lambda_harmonization
    parts = {name: classification.detach(), "weights": weights.detach(), "harmonization": harmonization.detach()}
    return loss, parts


def check_input_gradient(model: nn.Module, input_size: tuple[int, int], name: str) -> None:
    """TrainingError unless the logits are differentiable in the input and that gradient in the trainable
    parameters (the harmonizer trains the saliency). One probe image, in eval mode, on a copy."""
    probe_model = copy.deepcopy(model).eval()
    device = next(probe_model.parameters()).device
    images = torch.rand(1, 3, *input_size, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    with torch.enable_grad():
        logits = probe_model(images)
        score = logits[:, int(logits[0].argmax())].sum()
        if not score.requires_grad:
            gradient = None
        else:
            (gradient,) = torch.autograd.grad(score, images, create_graph=True, allow_unused=True)
    if gradient is None or not bool(torch.isfinite(gradient).all()):
        raise TrainingError(
            f"{name} has no differentiable path from its input to its logits (no finite ∂logit/∂image): --harmonize trains "
            "that gradient; use a model whose forward keeps the input in the autograd graph"
        )
    if not gradient.requires_grad:
        raise TrainingError(
            f"{name}'s input gradient does not depend on the parameters that train: --harmonize has nothing to move; "
            "train more of the model (--freeze)"
        )


@dataclass
class Harmonization:
    """λ · the pyramid term of the batch (``reference``, ``has_map``), from the step's own forward: the
    images require grad (``needs_input_grad``), so ∂logit/∂image is taken on the logits the other terms
    use. The label is the batch's, or the teacher's top-1."""

    weight: float
    levels: int = LEVELS
    teacher: nn.Module | None = field(default=None, repr=False)
    name: str = "harmonization"
    needs_features: bool = False
    needs_input_grad: bool = True

    def __call__(self, forward: Forward) -> Tensor:
        batch = forward.batch
        labels = teacher_logits(forward, self.teacher).argmax(dim=1) if self.teacher is not None else forward.labels
        # λ = 0 (the control): the term is logged, not trained through (no second-order graph)
        saliency = saliency_maps(forward.logits, forward.images, labels, create_graph=self.weight > 0 and torch.is_grad_enabled())
        human_maps, flags = map_flags(batch["reference"], batch["has_map"])
        return harmonization_term(saliency, human_maps.float(), flags, self.levels)


@dataclass
class WeightL2:
    """Σ ½‖w‖² of the trainable weights (tf.nn.l2_loss), the harmonizer's regulariser."""

    weight: float = LAMBDA_WEIGHTS
    name: str = "weights"
    needs_features: bool = False

    def __call__(self, forward: Forward) -> Tensor:
        return weight_l2(forward.model)


def frozen_copy(model: nn.Module) -> nn.Module:
    """The parent as a teacher (``--distill-from self``): a copy in eval mode with nothing that trains."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def harmonizer_terms(request: TrainRequest, teacher: nn.Module | None) -> list:
    """The loss terms of ``--harmonize λ``: harmonizer_loss's, each logged (ce or distill, weights, harmonization)."""
    first = Distillation(teacher, weight=request.distill_weight) if teacher is not None else CrossEntropy(label_smoothing=LABEL_SMOOTHING)
    return [first, WeightL2(), Harmonization(weight=request.harmonize, teacher=teacher)]
