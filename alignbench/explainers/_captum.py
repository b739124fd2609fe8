"""Input attributions from captum, each reduced to one map [B, H, W] per image in the input's geometry.

captum computes the attribution [B, 3, H, W] with respect to the model's input (the normalised
image); the reduction to one map is the one its paper's code or captum's visualisation uses:

- ``saliency``: max over colour channels of |d logit_t / dx| (Simonyan et al. 2014; the map
  Harmonization's leaderboard scores, Xplique's ``Saliency``): captum's ``Saliency(abs=True)``, max over C;
- ``input-x-gradient``, ``integrated-gradients``, ``guided-backprop``: |sum over colour channels|, as
  captum's ``visualize_image_attr`` draws a heat map (``sign="absolute_value"``, channels summed;
  its outlier clipping is for display and is not applied);
- ``smoothgrad``: the signed gradients averaged over the noisy copies (captum's ``NoiseTunnel`` over
  ``Saliency(abs=False)``), then sum over colour channels of |·|, the paper's code
  (PAIR-code/saliency ``VisualizeImageGrayscale``);
- ``occlusion``: captum's ``Occlusion`` with a window × window patch over all colour channels set to
  0 (the normalised mean colour): each pixel gets the mean drop of the target logit over the windows
  that cover it (Zeiler & Fergus 2014), signed; its three channels are equal, the map is their mean.

The target is the logit, pre-softmax, as for the CAMs; the parameters are frozen for the call, the
model is in eval mode (the dispatcher's), and captum's ReLU-hook warnings are silenced. Samples are
batched: integrated gradients runs its steps ``ROWS`` rows per forward/backward (captum's
``internal_batch_size``), smoothgrad its noisy copies ``ROWS`` at a time (``nt_samples_batch_size``),
occlusion its windows likewise (``perturbations_per_eval``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from alignbench._utils.precision import forward_autocast
from alignbench.errors import ExplainerError
from alignbench.explainers._methods import MethodSpec
from alignbench.explainers._split import Targets, frozen_parameters, model_device, model_name, resolve_targets

# Rows (images × samples) per forward/backward of integrated gradients, smoothgrad and occlusion,
# at least the batch. A constant, not the batch size: smoothgrad draws its noise chunk by chunk, and
# a map must not depend on the batch it was computed in.
ROWS = 16
# The blurred baseline of integrated gradients: a Gaussian of sigma = this fraction of the image's
# shorter side (11.2 px at 224), truncated at 3 sigma, reflected at the borders.
BLUR_SIGMA_FRAC = 0.05


class Logits(nn.Module):
    """The model as captum calls it: float32 logits under the requested precision's autocast, and a
    refusal (one line) where they do not depend differentiably on the input. The logits of the call
    on ``original`` itself (saliency, input × gradient, guided backprop and occlusion make one) are
    kept, so the explanation's logits cost no forward of their own."""

    def __init__(self, model: nn.Module, precision: str = "fp32", needs_gradient: bool = True, original: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.needs_gradient = needs_gradient
        self.original = original
        self.original_logits: Tensor | None = None

    def forward(self, images: Tensor) -> Tensor:
        with forward_autocast(images.device, self.precision):
            logits = self.model(images)
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise ExplainerError(f"{model_name(self.model)} gives no [B, classes] logits to attribute")
        if self.needs_gradient and images.requires_grad and not logits.requires_grad:
            raise ExplainerError(no_input_gradient(self.model))
        if images is self.original:
            self.original_logits = logits.detach().float()
        return logits.float()


def no_input_gradient(model: nn.Module, method: str = "this explainer") -> str:
    return (
        f"{method} needs d logit / d input, but {model_name(model)}'s logits have no gradient with respect to its input "
        "(its forward detaches it or runs without autograd); use occlusion or a CAM explainer"
    )


def model_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (height, width) the model is fed: the registry's preprocessing, else timm's pretrained config."""
    pre = getattr(getattr(model, "alignbench_info", None), "preprocessing", None)
    if pre is not None:
        return int(pre.input_size[-2]), int(pre.input_size[-1])
    cfg = getattr(model, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return (int(size[-2]), int(size[-1])) if size else None


def check_input_gradient(model: nn.Module, method: str) -> None:
    """One forward of a probe image at the model's input size (its only cost): ExplainerError unless
    the logits depend differentiably on the input."""
    size = model_input_size(model)
    if size is None:
        return  # nothing to probe with: a missing gradient is refused when the first batch runs
    probe = torch.zeros(1, 3, *size, device=model_device(model), requires_grad=True)
    training = [m for m in model.modules() if m.training]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad(), frozen_parameters(model):
            logits = model(probe)
    finally:
        for m in training:
            m.training = True
    if not (isinstance(logits, Tensor) and logits.requires_grad):
        raise ExplainerError(no_input_gradient(model, method))


def check_occlusion(height: int, width: int, params: dict[str, Any], what: str = "the image") -> None:
    window, stride = params["window"], params["stride"]
    if window > min(height, width):
        raise ExplainerError(
            f"occlusion window {window} is larger than {what} ({height}x{width}); use --window {min(height, width)} or less"
        )
    if stride > window:
        raise ExplainerError(f"occlusion stride {stride} is larger than the window {window}: some pixels would never be occluded")


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the model's input normalisation: the registry's, else timm's data config."""
    pre = getattr(getattr(model, "alignbench_info", None), "preprocessing", None)
    if pre is not None:
        return tuple(pre.mean), tuple(pre.std)
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return tuple(cfg["mean"]), tuple(cfg["std"])


def black(images: Tensor, model: nn.Module) -> Tensor:
    """The black image in the model's normalised input space: (0 - mean) / std per channel."""
    mean, std = normalisation(model)
    value = -torch.tensor(mean, dtype=images.dtype, device=images.device) / torch.tensor(std, dtype=images.dtype, device=images.device)
    return value.view(1, -1, 1, 1).expand_as(images).contiguous()


def blurred(images: Tensor) -> Tensor:
    """Each image Gaussian-blurred: sigma = BLUR_SIGMA_FRAC of the shorter side, kernel radius ⌈3σ⌉
    (at most the side - 1: reflect padding needs less than the side), reflected at the borders."""
    from torchvision.transforms.functional import gaussian_blur

    side = min(images.shape[-2:])
    sigma = BLUR_SIGMA_FRAC * side
    size = 2 * min(math.ceil(3 * sigma), side - 1) + 1
    return gaussian_blur(images, [size, size], [sigma, sigma])


def _integrated_gradients(forward: Logits, x: Tensor, t: Tensor, params: dict[str, Any], model: nn.Module) -> Tensor:
    from captum.attr import IntegratedGradients

    baseline = black(x, model) if params["baseline"] == "black" else blurred(x)
    rows = x.shape[0] * max(1, ROWS // x.shape[0])
    attr = IntegratedGradients(forward).attribute(x, baselines=baseline, target=t, n_steps=params["ig_steps"], internal_batch_size=rows)
    return attr.sum(dim=1).abs()


def _smoothgrad(forward: Logits, x: Tensor, t: Tensor, params: dict[str, Any]) -> Tensor:
    """Per image: its own noise scale (noise × its max - min) and its own seeded noise, so a map
    depends on the image, the seed and the parameters only, never on the rest of the batch."""
    from captum.attr import NoiseTunnel, Saliency

    tunnel = NoiseTunnel(Saliency(forward))
    devices = [x.device] if x.device.type == "cuda" else []
    maps = []
    for i in range(x.shape[0]):
        image = x[i : i + 1]
        stdev = float(params["noise"] * (image.max() - image.min()))
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(params["seed"])
            attr = tunnel.attribute(
                image,
                nt_type="smoothgrad",
                nt_samples=params["samples"],
                nt_samples_batch_size=ROWS,
                stdevs=stdev,
                target=t[i : i + 1],
                abs=False,
            )
        maps.append(attr.abs().sum(dim=1))
    return torch.cat(maps)


def _occlusion(forward: Logits, x: Tensor, t: Tensor, params: dict[str, Any]) -> Tensor:
    from captum.attr import Occlusion

    check_occlusion(x.shape[-2], x.shape[-1], params)
    window, stride = params["window"], params["stride"]
    attr = Occlusion(forward).attribute(
        x,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=0,
        target=t,
        perturbations_per_eval=max(1, ROWS // x.shape[0]),
    )
    return attr.mean(dim=1)


def attribution_maps(
    model: nn.Module, images: Tensor, targets: Targets, spec: MethodSpec, params: dict[str, Any], *, precision: str = "fp32"
) -> tuple[Tensor, Tensor, Tensor]:
    """(maps [B, H, W] at the images' size, logits, targets) for a captum-backed ``spec`` (module docstring)."""
    from captum.attr import InputXGradient, Saliency

    x = images.detach()
    forward = Logits(model, precision, needs_gradient=spec.needs == "input-gradient", original=x)
    num_classes = getattr(model, "num_classes", None)
    logits = None
    if targets is None or spec.name in ("integrated-gradients", "smoothgrad") or not isinstance(num_classes, int):
        # the top-1 targets, or logits that captum's calls on noisy / interpolated images do not give
        with torch.no_grad():
            logits = forward(x)
    t = resolve_targets(targets, logits if logits is not None else x.new_zeros(x.shape[0], num_classes))
    with frozen_parameters(model), warnings.catch_warnings():
        # captum warns that it sets ReLU hooks and that the inputs require grad: both are by design here
        warnings.simplefilter("ignore")
        if spec.name == "saliency":
            maps = Saliency(forward).attribute(x, target=t, abs=True).amax(dim=1)
        elif spec.name == "input-x-gradient":
            maps = InputXGradient(forward).attribute(x, target=t).sum(dim=1).abs()
        elif spec.name == "integrated-gradients":
            maps = _integrated_gradients(forward, x, t, params, model)
        elif spec.name == "smoothgrad":
            maps = _smoothgrad(forward, x, t, params)
        elif spec.name == "guided-backprop":
            maps = _guided_backprop(forward, x, t)
        elif spec.name == "occlusion":
            maps = _occlusion(forward, x, t, params)
        else:  # pragma: no cover - the registry and this dispatcher are kept in step by the tests
            raise ExplainerError(f"{spec.name} is not a captum attribution")
    if logits is None:
        logits = forward.original_logits
    if logits is None:  # pragma: no cover - captum evaluates the original images in each of these methods
        with torch.no_grad():
            logits = forward(x)
    return maps.detach().float(), logits.detach(), t


def _guided_backprop(forward: Logits, x: Tensor, t: Tensor) -> Tensor:
    """captum's ``GuidedBackprop``, |channel sum|. Its ReLU hooks fail inside the forward where the
    input has no gradient, before ``Logits`` can say so: that case is told apart and refused in one line."""
    from captum.attr import GuidedBackprop

    try:
        return GuidedBackprop(forward).attribute(x, target=t).sum(dim=1).abs()
    except RuntimeError:
        probe = x.detach().requires_grad_(True)
        with torch.enable_grad():
            if not forward.model(probe).requires_grad:
                raise ExplainerError(no_input_gradient(forward.model, "guided-backprop")) from None
        raise


def check_guided_backprop(model: nn.Module) -> None:
    """Guided backpropagation rewrites the backward of ``nn.ReLU`` modules; without any it is the plain gradient."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise ExplainerError(
            f"guided-backprop clips the gradient at each nn.ReLU module, and {model_name(model)} has none "
            "(GELU/SiLU or functional ReLUs): its map would be the plain gradient — use saliency"
        )
