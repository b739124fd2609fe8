"""Float tolerances derived from the computation under test, not tuned to one machine's output.

float32 rounds every operation to a relative error of at most u = EPS / 2 (EPS = 2**-23 ≈ 1.19e-7,
``torch.finfo(torch.float32).eps``). A sum (or dot product) of n terms evaluated in float32, in any
order, is within γ_n·Σ|terms| of the exact sum, γ_n = n·u / (1 - n·u) ≈ n·EPS/2 (Higham, *Accuracy
and Stability of Numerical Algorithms*, 2nd ed., §3.1 and §4.2). So two float32 evaluations of the
same sum that accumulate in different orders (a convolution against an einsum, a batch against
one image, two BLAS kernels, float32 against a float64 reference) differ by at most ≈ n·EPS·Σ|terms|.
That worst case holds whatever the order and the CPU's vector width, which is the point: a bound
that a different machine cannot exceed. Bugs (a wrong index, a missing term, a wrong scale) give
errors of the order of the terms themselves, far above it.
"""

from __future__ import annotations

import torch

EPS = torch.finfo(torch.float32).eps  # 2**-23; unit roundoff u = EPS / 2
EPS64 = torch.finfo(torch.float64).eps  # 2**-52


def float32_bound(n_terms: int, magnitude: float, margin: float = 2.0, eps: float = EPS) -> float:
    """Bound on |a - b| for two float32 evaluations of one sum of ``n_terms`` terms, in different orders.

    ``magnitude`` is Σ|terms| (or an upper bound of it, e.g. n·max|term|, or for a dot product
    Σ|x_i·y_i| ≤ |x|·|y|). Each evaluation is within γ_n·magnitude ≈ n·EPS/2·magnitude of the exact
    sum, so the two are within n·EPS·magnitude of each other; ``margin`` (default 2) covers the few
    rounded operations around the sum (a scale, a bias, casts, an input already rounded once).
    Pass ``eps=EPS64`` for float64 computations.
    """
    return float(margin * n_terms * eps * magnitude)


def float32_relative(n_ops: int, margin: float = 2.0, eps: float = EPS) -> float:
    """Relative bound after ``n_ops`` chained rounded operations (products, quotients, sums of
    same-sign terms, exp): each adds at most u = EPS/2 of relative error, so n_ops·EPS/2, times ``margin``."""
    return float(margin * n_ops * eps / 2)


def softmax_relative(logit_error: float, n: int, margin: float = 2.0) -> float:
    """Relative bound on |p - p'| / p for two float32 softmaxes over ``n`` entries whose logits differ
    by at most ``logit_error`` (absolute): a shift δ in the logits moves each p by a factor within
    exp(±2δ) ≈ 1 ± 2δ (numerator and denominator), plus each side's own roundings (the max
    subtraction, exp, the n-term positive sum, the division: n + 4 operations)."""
    return float(2 * logit_error + float32_relative(n + 4, margin))


def network_relative(model: torch.nn.Module, passes: int = 1) -> float:
    """Relative bound (to the output's largest entry) on two float32 evaluations of ``model`` that
    sum the same products in other orders (another kernel, batch or conversion): every layer sums
    its fan-in, so float32_relative of all the fan-ins (an upper bound on any path's), assuming each
    stage well conditioned (the norms keep the activations' scale); ``passes`` 2 for a gradient."""
    fan_in = sum(m.weight[0].numel() for m in model.modules() if getattr(m, "weight", None) is not None and m.weight.ndim >= 2)
    eps = torch.finfo(next(model.parameters()).dtype).eps
    return float32_relative(passes * fan_in, eps=eps)
