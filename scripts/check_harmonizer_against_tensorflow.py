"""Check alignbench's neural harmonizer loss against Harmonization's TensorFlow code itself.

alignbench never imports TensorFlow, so this runs in two steps and two environments:

    python3 -m venv /work/tf-venv && /work/tf-venv/bin/pip install tensorflow-cpu numpy
    /work/tf-venv/bin/python scripts/check_harmonizer_against_tensorflow.py tf /tmp/harmonizer_tf.npz
    .venv/bin/python scripts/check_harmonizer_against_tensorflow.py compare /tmp/harmonizer_tf.npz

Step ``tf`` draws random inputs with a fixed seed: signed saliency maps (several scales, one close to
the 1e-5 of standardize_cut) and non-negative blob-like human maps of odd and even sizes, batches
whose tokens (has_map) hold 0s, and a few variables for the L2 term. It runs them through
Harmonization's own TF functions, copied below (statement for statement; only line breaks and spaces differ) from serre-lab/Harmonization at commit
ffe1c49dba425504a74b050cedc8382a423448f3 (harmonization/training/loss.py: standardize_cut,
_mse_with_tokens, pyramidal_mse_with_tokens, and the rescaling lines of harmonizer_loss;
harmonization/training/pyramid.py: _downsample, _binomial_kernel, pyramidal_representation), and
saves the standardised maps, the rescaled human maps, every pyramid level, the pyramidal MSE, its
gradient (tf.GradientTape) with respect to the standardised saliency and, through the whole term,
with respect to the raw saliency, and the tf.nn.l2_loss sums. Step ``compare`` feeds the same inputs
to alignbench.training._harmonizer and prints the largest absolute and relative (to max |TF|)
difference of every quantity.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HARMONIZATION_COMMIT = "ffe1c49dba425504a74b050cedc8382a423448f3"
NB_LEVELS = 5
# (name, batch, height, width, tokens, saliency scale)
CASES = [
    ("224x224", 3, 224, 224, (1, 0, 1), 1e-3),
    ("223x227", 3, 223, 227, (0, 1, 1), 1.0),
    ("64x64", 4, 64, 64, (1, 1, 0, 1), 1e-2),
    ("17x33", 4, 17, 33, (1, 0, 0, 1), 1e-5),
    ("7x5", 2, 7, 5, (1, 1), 3.0),
]
# (TF-style name, torch-style name, shape): the names for loss.py's filter and for alignbench's
VARIABLES = [
    ("conv1/kernel:0", "conv1.weight", (3, 3, 3, 8)),
    ("conv1_bn/gamma:0", "bn1.weight", (8,)),
    ("conv1_bn/beta:0", "bn1.bias", (8,)),
    ("dense/kernel:0", "fc.weight", (8, 10)),
    ("dense/bias:0", "fc.bias", (10,)),
    ("class_token:0", "cls_token", (1, 1, 8)),
    ("pos_embed:0", "pos_embed", (1, 5, 8)),
    ("LayerNorm/gamma:0", "norm.weight", (8,)),
]


def inputs(rng: np.random.Generator, batch: int, height: int, width: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed saliency maps (noise times a few blobs, heavy-tailed as gradients are) and human maps
    (non-negative blobs, about half the pixels exactly 0, grey levels 0..255 like ClickMe)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)

    def blobs(count: int) -> np.ndarray:
        heat = np.zeros((height, width))
        for _ in range(count):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            sigma = rng.uniform(1.0, max(height, width) / 4)
            heat += np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma * sigma))
        return heat

    saliency = np.stack([scale * rng.standard_normal((height, width)) * (0.2 + blobs(3)) for _ in range(batch)])
    human = []
    for _ in range(batch):
        heat = blobs(3)
        heat = np.maximum(heat - np.median(heat), 0)
        human.append(np.round(255 * heat / heat.max()))
    return saliency.astype(np.float32), np.stack(human).astype(np.float32)


def tf_side(out: Path) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    # fmt: off
    # ---- serre-lab/Harmonization @ ffe1c49dba425504a74b050cedc8382a423448f3, harmonization/training/pyramid.py
    def _downsample(image, kernel):
        return tf.nn.conv2d(input=image, filters=kernel, strides=[1, 2, 2, 1], padding="SAME")

    def _binomial_kernel(num_channels):
        kernel = np.array((1.0, 4.0, 6.0, 4.0, 1.0), dtype=np.float32)
        kernel = np.outer(kernel, kernel)
        kernel /= np.sum(kernel)
        kernel = kernel[:, :, np.newaxis, np.newaxis]
        return tf.constant(kernel, dtype=tf.float32) * tf.eye(num_channels, dtype=tf.float32)

    def pyramidal_representation(image, num_levels):
        kernel = _binomial_kernel(tf.shape(input=image)[3])
        levels = [image]
        for _ in range(num_levels):
            image = _downsample(image, kernel)
            levels.append(image)
        return levels

    # ---- serre-lab/Harmonization @ ffe1c49dba425504a74b050cedc8382a423448f3, harmonization/training/loss.py
    def standardize_cut(heatmaps, axes=(1, 2), epsilon=1e-5):
        means = tf.reduce_mean(heatmaps, axes, keepdims=True)
        stds = tf.math.reduce_std(heatmaps, axes, keepdims=True)

        heatmaps = heatmaps - means
        heatmaps = heatmaps / (stds + epsilon)

        heatmaps = tf.nn.relu(heatmaps)

        return heatmaps

    def _mse_with_tokens(heatmaps_a, heatmaps_b, tokens):
        return tf.reduce_mean(tf.square(heatmaps_a - heatmaps_b) * tokens[:, None, None, None])

    def pyramidal_mse_with_tokens(true_heatmaps, predicted_heatmaps, tokens, nb_levels=5):
        pyramid_y = pyramidal_representation(true_heatmaps[:, :, :, None], nb_levels)
        pyramid_y_pred = pyramidal_representation(predicted_heatmaps[:, :, :, None], nb_levels)

        loss = tf.reduce_mean([_mse_with_tokens(pyramid_y[i], pyramid_y_pred[i], tokens) for i in range(nb_levels)])

        return loss

    def harmonization_term(sa_maps, true_heatmaps, tokens):
        """harmonizer_loss from "apply the standardization-cut procedure" to harmonization_loss, statement for statement."""
        # apply the standardization-cut procedure on heatmaps
        sa_maps_preprocess = standardize_cut(sa_maps)
        heatmaps_preprocess = standardize_cut(true_heatmaps)

        # re-normalize before pyramidal
        _hm_max = tf.math.reduce_max(heatmaps_preprocess, (1, 2), keepdims=True) + 1e-6
        _sa_max = tf.stop_gradient(tf.math.reduce_max(sa_maps_preprocess, (1, 2), keepdims=True)) + 1e-6
        # normalize the true heatmaps according to the saliency maps
        heatmaps_preprocess = heatmaps_preprocess / _hm_max * _sa_max

        # compute and combine the losses
        harmonization_loss = pyramidal_mse_with_tokens(sa_maps_preprocess, heatmaps_preprocess, tokens)
        return harmonization_loss, sa_maps_preprocess, heatmaps_preprocess

    # ---- end of the copies
    # fmt: on

    rng = np.random.default_rng(20221128)
    saved: dict[str, np.ndarray] = {}
    for name, batch, height, width, tokens, scale in CASES:
        saliency, human = inputs(rng, batch, height, width, scale)
        tokens = np.asarray(tokens, dtype=np.float32)
        saved.update({f"{name}__saliency": saliency, f"{name}__human": human, f"{name}__tokens": tokens})
        sa, hm, tk = tf.constant(saliency), tf.constant(human), tf.constant(tokens)
        with tf.GradientTape() as tape:
            tape.watch(sa)
            loss, sa_pre, hm_pre = harmonization_term(sa, hm, tk)
        saved[f"{name}__grad_raw"] = tape.gradient(loss, sa).numpy()
        saved[f"{name}__loss"] = loss.numpy()
        saved[f"{name}__sa_std"] = sa_pre.numpy()
        saved[f"{name}__hm_std"] = standardize_cut(hm).numpy()
        saved[f"{name}__hm_rescaled"] = hm_pre.numpy()
        # the pyramidal MSE alone, as a function of the standardised saliency (its first argument)
        sa_pre = tf.constant(sa_pre.numpy())
        with tf.GradientTape() as tape:
            tape.watch(sa_pre)
            mse = pyramidal_mse_with_tokens(sa_pre, hm_pre, tk, NB_LEVELS)
        saved[f"{name}__grad_std"] = tape.gradient(mse, sa_pre).numpy()
        saved[f"{name}__mse"] = mse.numpy()
        # all NB_LEVELS + 1 levels pyramidal_representation computes (the last is never read by the loss)
        for which, maps in (("sa", sa_pre), ("hm", hm_pre)):
            for level, image in enumerate(pyramidal_representation(maps[:, :, :, None], NB_LEVELS)):
                saved[f"{name}__pyr_{which}_{level}"] = image.numpy()[:, :, :, 0]
        print(
            f"  {name}: batch {batch}, tokens {tokens.astype(int).tolist()}, levels "
            + " ".join("×".join(map(str, saved[f"{name}__pyr_sa_{level}"].shape[1:])) for level in range(NB_LEVELS + 1))
            + f", loss {float(loss):.6e}"
        )

    variables = []
    for tf_name, _, shape in VARIABLES:
        value = rng.standard_normal(shape).astype(np.float32)
        saved[f"var__{tf_name}"] = value
        variables.append((tf_name, tf.Variable(value)))
    saved["l2_all"] = tf.add_n([tf.nn.l2_loss(v) for _, v in variables]).numpy()
    # loss.py's filter, on the names (tf.Variable names are not settable to these under Keras 3)
    saved["l2_filtered"] = tf.add_n(
        [
            tf.nn.l2_loss(v)
            for n, v in variables
            if "bn/" not in n
            and "normalization" not in n
            and "embed" not in n
            and "Norm" not in n
            and "norm" not in n
            and "class_token" not in n
        ]
    ).numpy()
    saved["l2_each"] = np.array([tf.nn.l2_loss(v).numpy() for _, v in variables])
    np.savez(out, **saved)
    print(f"tensorflow {tf.__version__}, numpy {np.__version__}; Harmonization @ {HARMONIZATION_COMMIT}; saved {out}")


def compare(saved: Path) -> None:
    import torch
    from torch import nn

    from alignbench.training._harmonizer import (
        BINOMIAL_KERNEL,
        LEVELS,
        NOT_WEIGHT_DECAYED,
        downsample,
        harmonization_term,
        map_flags,
        pyramid,
        pyramidal_mse,
        rescale_to_saliency,
        standardize_cut,
        weight_l2,
    )

    torch.set_num_threads(1)
    data = np.load(saved)
    assert LEVELS == NB_LEVELS, LEVELS
    worst = {"abs": 0.0, "rel": 0.0}

    def report(label: str, ours, theirs) -> None:
        ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
        theirs = np.asarray(theirs)
        if ours.shape != theirs.shape:
            print(f"    {label:34s} SHAPE MISMATCH alignbench {ours.shape} TF {theirs.shape}")
            worst["rel"] = float("inf")
            return
        diff = float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max()) if ours.size else 0.0
        scale = float(np.abs(theirs).max()) if theirs.size else 0.0
        relative = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        worst["abs"], worst["rel"] = max(worst["abs"], diff), max(worst["rel"], relative)
        print(f"    {label:34s} max |diff| {diff:.3e}   relative {relative:.3e}   (max |TF| {scale:.3e})")

    kernel = np.outer([1.0, 4.0, 6.0, 4.0, 1.0], [1.0, 4.0, 6.0, 4.0, 1.0]) / 256.0
    print("alignbench vs Harmonization's TF (relative = max |diff| / max |TF value|):")
    report("binomial kernel (vs float64 exact)", BINOMIAL_KERNEL, kernel)
    for name, *_ in CASES:
        saliency = torch.from_numpy(data[f"{name}__saliency"])
        human = torch.from_numpy(data[f"{name}__human"])
        tokens = torch.from_numpy(data[f"{name}__tokens"])
        print(f"  {name}  batch {len(saliency)}, has_map {tokens.int().tolist()}")
        sa_std, hm_std = standardize_cut(saliency), standardize_cut(human)
        report("standardize_cut(saliency)", sa_std, data[f"{name}__sa_std"])
        report("standardize_cut(human)", hm_std, data[f"{name}__hm_std"])
        report("human / _hm_max * _sa_max", rescale_to_saliency(hm_std, sa_std), data[f"{name}__hm_rescaled"])
        # the pyramid of TF's own standardised / rescaled maps, level by level (5 used + the unused 6th)
        for which in ("sa", "hm"):
            source = torch.from_numpy(data[f"{name}__pyr_{which}_0"])
            levels = pyramid(source, NB_LEVELS)
            levels.append(downsample(levels[-1]))
            for level, ours in enumerate(levels):
                report(
                    f"pyramid {which} level {level}" + (" (unused)" if level == NB_LEVELS else ""),
                    ours,
                    data[f"{name}__pyr_{which}_{level}"],
                )
        # the pyramidal MSE and its gradient in the standardised saliency
        sa_pre = torch.from_numpy(data[f"{name}__sa_std"]).requires_grad_(True)
        mse = pyramidal_mse(sa_pre, torch.from_numpy(data[f"{name}__hm_rescaled"]), tokens, NB_LEVELS)
        (grad_std,) = torch.autograd.grad(mse, sa_pre)
        report("pyramidal MSE", mse, data[f"{name}__mse"])
        report("∂ pyramidal MSE / ∂ std saliency", grad_std, data[f"{name}__grad_std"])
        # the whole term from the raw saliency, and its gradient through standardize_cut and the rescaling
        raw = saliency.clone().requires_grad_(True)
        loss = harmonization_term(raw, human, tokens, NB_LEVELS)
        (grad_raw,) = torch.autograd.grad(loss, raw)
        report("harmonization_term", loss, data[f"{name}__loss"])
        report("∂ harmonization_term / ∂ saliency", grad_raw, data[f"{name}__grad_raw"])
        # as harmonizer_loss feeds it: maps flagged 0 replaced by zeros (map_flags); must not change anything
        flagged_maps, flags = map_flags(human, tokens)
        raw = saliency.clone().requires_grad_(True)
        loss = harmonization_term(raw, flagged_maps, flags, NB_LEVELS)
        (grad_raw,) = torch.autograd.grad(loss, raw)
        report("… after map_flags", loss, data[f"{name}__loss"])
        report("… ∂/∂ saliency after map_flags", grad_raw, data[f"{name}__grad_raw"])

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for tf_name, torch_name, _ in VARIABLES:
                owner, _, leaf = torch_name.rpartition(".")
                module = self
                if owner:
                    if not hasattr(self, owner):
                        self.add_module(owner, nn.Module())
                    module = getattr(self, owner)
                module.register_parameter(leaf, nn.Parameter(torch.from_numpy(data[f"var__{tf_name}"])))

    holder = Holder()
    print("  tf.nn.l2_loss")
    parameters = dict(holder.named_parameters())  # (not holder.parameters(): its order is not VARIABLES')
    each = [(parameters[torch_name] * parameters[torch_name]).sum() / 2 for _, torch_name, _ in VARIABLES]
    report("per variable, Σ w²/2", torch.stack(each), data["l2_each"])
    report("Σ over all variables", torch.stack(each).sum(), data["l2_all"])
    names = [name for name, _ in holder.named_parameters()]
    kept = [name for name in names if not any(part in name for part in NOT_WEIGHT_DECAYED)]
    tf_kept = [
        tf_name
        for tf_name, _, _ in VARIABLES
        if not any(part in tf_name for part in ("bn/", "normalization", "embed", "Norm", "norm", "class_token"))
    ]
    print(f"    weight_l2 keeps {kept} of {names}; loss.py's filter keeps {tf_kept}")
    report("weight_l2 vs loss.py's filter", weight_l2(holder), data["l2_filtered"])
    print(f"largest over everything: max |diff| {worst['abs']:.3e}, relative {worst['rel']:.3e}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("tf", "compare"):
        raise SystemExit(__doc__)
    (tf_side if sys.argv[1] == "tf" else compare)(Path(sys.argv[2]))
