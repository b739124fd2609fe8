"""Depthwise convolution with a large kernel on the CPU, forward and backward at the cost of the forward.

A DCLS kernel spans D×D (17×17 in the paper's recipes), and oneDNN — what torch runs on the CPU —
handles such depthwise kernels well only forward and only in channels_last. Its backward w.r.t. the
kernel falls back to a generic path: on this machine 4–7 s for a 144×56×56 batch of 8 whose forward
takes 0.2–0.3 s. No library offers a faster one, so the backward is written here:

- d input: the transposed convolution (``F.conv_transpose2d``, oneDNN's direct kernel);
- d kernel: dK[c, i, j] = Σ_n Σ_(y,x) g[n, c, y, x] · x_pad[n, c, s·y + i, s·x + j], a correlation per
  channel summed over the batch. On large maps it runs through the FFT (the circular correlation of
  x_pad with g, of a length ≥ x_pad's, has no wrap-around at lags < D); on small maps, where the
  FFT's per-transform overhead dominates, as a depthwise convolution of x_pad (batch × channels as
  channels) with g as the kernel (dilated by the stride), whose kernel is then small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Output maps up to this many pixels take d kernel through the small-kernel convolution.
_SMALL_MAP = 16 * 16


def depthwise_conv(input: Tensor, weight: Tensor, bias: Tensor | None, stride, padding) -> Tensor:
    """``F.conv2d(input, weight, bias, stride, padding, groups=channels)`` in channels_last, with the
    backward above; ``weight`` is (channels, 1, kh, kw)."""
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))):
        return F.conv2d(input, weight, bias, stride, padding, 1, input.shape[1])
    return _DepthwiseConv.apply(input, weight, bias, tuple(stride), tuple(padding))


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, weight: Tensor, bias: Tensor | None, stride, padding) -> Tensor:
        ctx.save_for_backward(input, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(input, weight, bias, stride, padding, 1, input.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        input, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad_output = grad_output.contiguous(memory_format=torch.channels_last)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # The input rows the strided convolution never reached get no gradient: output_padding.
            output_padding = tuple(
                size + 2 * pad - kernel - (out - 1) * step
                for size, pad, kernel, out, step in zip(input.shape[-2:], padding, weight.shape[-2:], grad_output.shape[-2:], stride)
            )
            grad_input = F.conv_transpose2d(grad_output, weight, None, stride, padding, output_padding, input.shape[1])
        if ctx.needs_input_grad[1]:
            grad_weight = kernel_grad(input, grad_output, weight.shape[-2:], stride, padding).to(weight.dtype)
            grad_weight = grad_weight.contiguous(memory_format=torch.channels_last)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None, None


def kernel_grad(input: Tensor, grad_output: Tensor, kernel_size, stride, padding) -> Tensor:
    """dL/dK (channels, 1, kh, kw) of a depthwise convolution, from its input and dL/d output."""
    padded = F.pad(input, (padding[1], padding[1], padding[0], padding[0]))
    if grad_output.shape[-2] * grad_output.shape[-1] <= _SMALL_MAP:
        return _kernel_grad_by_conv(padded, grad_output, kernel_size, stride)
    return _kernel_grad_by_fft(padded, grad_output, kernel_size, stride)


def _kernel_grad_by_conv(padded: Tensor, grad_output: Tensor, kernel_size, stride) -> Tensor:
    batch, channels, height, width = padded.shape
    # Channel c·batch + n: image n of channel c, convolved with its own g[n, c].
    images = padded.transpose(0, 1).reshape(1, channels * batch, height, width)
    kernels = grad_output.transpose(0, 1).reshape(channels * batch, 1, *grad_output.shape[-2:])
    lags = F.conv2d(images, kernels, None, 1, 0, stride, channels * batch)
    lags = lags[..., : kernel_size[0], : kernel_size[1]]
    return lags.reshape(channels, batch, *kernel_size).sum(1, keepdim=True)


def _kernel_grad_by_fft(padded: Tensor, grad_output: Tensor, kernel_size, stride) -> Tensor:
    if stride != (1, 1):  # g on the input's grid: zeros between the strided outputs
        batch, channels, rows, cols = grad_output.shape
        spread = grad_output.new_zeros(batch, channels, (rows - 1) * stride[0] + 1, (cols - 1) * stride[1] + 1)
        spread[..., :: stride[0], :: stride[1]] = grad_output
        grad_output = spread
    size = tuple(_fft_size(n) for n in padded.shape[-2:])
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(grad_output, s=size).conj()
    lags = torch.fft.irfft2(spectrum.sum(0), s=size)[..., : kernel_size[0], : kernel_size[1]]
    return lags.unsqueeze(1)


def _fft_size(n: int) -> int:
    """The smallest length ≥ n with no prime factor above 5 (the FFT's fast sizes)."""
    while True:
        rest = n
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return n
        n += 1
