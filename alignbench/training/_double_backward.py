"""Grouped convolutions whose double backward is fast on the CPU (for losses of input gradients: the harmonizer).

A loss of ∂logit/∂image (the harmonizer's saliency) is differentiated through the backward of every
convolution. Through a grouped convolution's backward, torch's ``_convolution_double_backward``
computes the weight term one group at a time — a depthwise layer of C channels becomes C small
convolutions (thousands per step for an EfficientNet). Here the input gradient of a grouped
convolution is written as the ``conv_transpose2d`` it equals, an ordinary op whose own backward is one
grouped kernel; the weight gradient stays ``convolution_backward``'s. The values are the same
convolution sums in another order.

``grouped_conv_double_backward()`` is a ``TorchFunctionMode``: under it every ``conv2d`` with groups > 1
(torch's modules, timm's ``Conv2dSame``, DCLS kernels) takes this path; nothing else changes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


class _GroupedConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            kernel = weight.shape[-2:]
            # the rows/columns the strided forward never reached: conv_transpose2d's output_padding
            extra = [
                x.shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1) for i in (0, 1)
            ]
            grad_x = F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, (False, True, False)
            )[1]
        return grad_x, grad_weight, None, None, None, None


def _arguments(args: tuple, kwargs: dict) -> tuple:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    values = dict(zip(names, defaults))
    values.update(zip(names, args))
    values.update(kwargs)
    return tuple(values[name] for name in names)


class grouped_conv_double_backward(TorchFunctionMode):  # noqa: N801 - used as a context manager, like torch's modes
    """Under this mode, ``conv2d`` with groups > 1 runs as ``_GroupedConv2d`` (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            x, weight, bias, stride, padding, dilation, groups = _arguments(args, kwargs)
            if groups > 1 and not isinstance(padding, str) and x.dim() == 4:
                out = _GroupedConv2d.apply(x, weight, _pair(stride), _pair(padding), _pair(dilation), groups)
                return out if bias is None else out + bias.view(1, -1, 1, 1)
        return func(*args, **kwargs)
