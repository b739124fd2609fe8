"""Methods computed by pytorch-grad-cam itself, behind the same ``explain`` call."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import AblationCAM, EigenCAM, FullGrad, GradCAMElementWise, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from alignbench.errors import ExplainerError
from alignbench.explainers import METHODS, explain, explain_batch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def direct(cam_class, model, layers, images, targets):
    """The library on the unmodified model (A = layer4's output), as its README shows."""
    cam = cam_class(model, layers)
    try:
        return cam(images, [ClassifierOutputTarget(t) for t in targets])
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "method, cam_class",
    [("eigencam", EigenCAM), ("gradcam-elementwise", GradCAMElementWise), ("scorecam", ScoreCAM), ("ablationcam", AblationCAM)],
)
def test_library_methods_are_the_library(method, cam_class, model, images):
    # one image for the methods that run a forward per channel
    images, targets = (images[:1], [3]) if method in ("scorecam", "ablationcam") else (images, [3, 8])
    ours = explain(model, images, targets, method)
    theirs = direct(cam_class, model, [model.layer4], images, targets)
    assert ours.shape == (len(targets), 64, 64) and ours.dtype == torch.float32
    # the same library code on the same model, images and targets in this process: the same float32
    # operations in the same order, so equal to the bit (was atol=1e-5, tuned; torch aligns every
    # buffer to 64 bytes, so an alignment-dependent BLAS path is the same too)
    np.testing.assert_array_equal(ours.numpy(), theirs)


def test_fullgrad_uses_the_whole_graph_and_leaves_no_gradients(model, images):
    flags = [p.requires_grad for p in model.parameters()]
    ours = explain(model, images, [1, 2], "fullgrad")
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    theirs = direct(FullGrad, model, [], images, [1, 2])
    np.testing.assert_array_equal(ours.numpy(), theirs)  # the library's own code on the same graph: see above (was atol=1e-5)


def test_every_library_method_runs_and_returns_normalised_maps(model, images):
    for name, spec in METHODS.items():
        if spec.kind != "library" or name in ("scorecam", "ablationcam"):  # those two: above
            continue
        result = explain_batch(model, images[:1], None, name)
        assert result.maps.shape == (1, 64, 64), name
        assert float(result.maps.min()) >= 0 and float(result.maps.max()) <= 1 + 1e-6, (
            name
        )  # x / (1e-7 + max) ≤ 1, then convex cv2 weights: a few roundings, 1e-6 ≈ 8·EPS
        assert torch.equal(result.targets, result.logits.argmax(1)), name
        assert all(p.grad is None for p in model.parameters()), name
        assert sum(len(m._forward_hooks) for m in model.modules()) == 0, name


def test_randomcam_is_seeded_and_gives_the_callers_rng_back(model, images):
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = explain(model, images, [0, 0], "randomcam")
    assert np.random.rand() == expected_next  # the caller's numpy RNG state is untouched
    assert torch.equal(explain(model, images, [0, 0], "randomcam"), first)
    assert not torch.equal(explain(model, images, [0, 0], "randomcam", seed=1), first)


def test_out_of_range_targets_are_refused_before_the_library_runs(model, images):
    # the library would swallow the IndexError and print it; we refuse with one clear line
    with pytest.raises(ExplainerError, match="target class 12 is out of range"):
        explain(model, images, [0, 12], "eigencam")
