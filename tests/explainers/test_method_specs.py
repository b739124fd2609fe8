"""The explainer registry is data, torch-free, and names every setting canonically."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignbench.errors import ExplainerError
from alignbench.explainers import METHODS, explainer_setting, resolve_method


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, alignbench.explainers as e; e.explainer_setting('threshold');sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("threshold", "threshold-gradcam"),
        ("Threshold-GradCAM", "threshold-gradcam"),
        ("GradCAM++", "gradcam++"),
        ("gradcam_plusplus", "gradcam++"),
        ("grad-cam", "gradcam"),
        ("EigenCAM", "eigencam"),
        ("attention-rollout", "rollout"),
    ],
)
def test_aliases_resolve_to_one_canonical_name(given, canonical):
    assert resolve_method(given).name == canonical


def test_settings_fill_defaults_and_coerce_types():
    assert explainer_setting("threshold") == ("threshold-gradcam", {"threshold": 0.3})
    assert explainer_setting("threshold-gradcam", threshold="0.5") == ("threshold-gradcam", {"threshold": 0.5})
    assert explainer_setting("threshold", threshold=None) == ("threshold-gradcam", {"threshold": 0.3})
    assert explainer_setting("gradcam") == ("gradcam", {})
    assert explainer_setting("rollout") == ("rollout", {"head_fusion": "mean", "discard_ratio": 0.0})
    assert explainer_setting("rollout", head_fusion="max", discard_ratio="0.9") == ("rollout", {"head_fusion": "max", "discard_ratio": 0.9})


def test_raw_attention_keeps_its_stored_setting_unless_another_layer_is_asked_for():
    # settings stored before --layer existed were {"head_fusion": "mean"}: the last block, as -1 is
    stored = ("raw-attention", {"head_fusion": "mean"})
    assert explainer_setting("raw-attention") == stored
    assert explainer_setting("raw-attention", layer=None) == stored
    assert explainer_setting("raw-attention", layer=-1) == stored
    assert explainer_setting("raw-attention", layer="3", head_fusion="max") == ("raw-attention", {"head_fusion": "max", "layer": 3})
    assert explainer_setting("raw-attention", layer=2.0) == ("raw-attention", {"head_fusion": "mean", "layer": 2})


def test_registry_covers_the_issue_and_every_spec_is_consistent():
    for name in ("gradcam", "threshold-gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigengradcam"):
        assert METHODS[name].kind == "core"
    for name in ("eigencam", "scorecam", "ablationcam", "fullgrad"):
        assert METHODS[name].kind == "library"
    assert METHODS["rollout"].needs == METHODS["raw-attention"].needs == "attention"
    for name, spec in METHODS.items():
        assert name == spec.name == name.lower()
        assert resolve_method(name) is spec
        if spec.kind == "library":
            assert spec.library_class


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: resolve_method("gradcam3"), "unknown explainer 'gradcam3'"),
        (lambda: explainer_setting("gradcam", threshold=0.3), "takes no parameter 'threshold'"),
        (lambda: explainer_setting("threshold", threshold=1.2), "threshold must be in [0, 1)"),
        (lambda: explainer_setting("threshold", threshold="high"), "is not a float"),
        (lambda: explainer_setting("rollout", head_fusion="median"), "head_fusion must be one of"),
        (lambda: explainer_setting("rollout", discard_ratio=1.0), "discard_ratio must be in [0, 1)"),
        (lambda: explainer_setting("rollout", discard_ratio=-0.1), "discard_ratio must be in [0, 1)"),
        (lambda: explainer_setting("rollout", layer=3), "explainer 'rollout' takes no parameter 'layer'"),
        (lambda: explainer_setting("raw-attention", discard_ratio=0.5), "takes no parameter 'discard_ratio'"),
        (lambda: explainer_setting("raw-attention", layer=2.5), "layer=2.5 is not a whole number"),
        (lambda: explainer_setting("raw-attention", layer="last"), "layer='last' is not a whole number"),
    ],
)
def test_bad_settings_are_one_clear_line(call, fragment):
    with pytest.raises(ExplainerError) as info:
        call()
    assert fragment in info.value.message and "\n" not in info.value.message


def test_parameters_are_declared_once_in_the_spec():
    from alignbench.explainers import ParamSpec, check_params

    for spec in METHODS.values():
        assert all(isinstance(param, ParamSpec) and param.help for param in spec.params)
        assert explainer_setting(spec.name)[1] == dict(spec.defaults)  # the defaults are the declared ones
        for param in spec.params:
            assert isinstance(param.default, param.type)
            if param.range is not None:
                assert param.range[0] <= param.default < param.range[1]
            if param.choices:
                assert param.default in param.choices
    assert METHODS["raw-attention"].optional == {"layer": -1}
    # what a command was given, checked and coerced, without the defaults it was not given
    assert check_params("threshold", {"threshold": "0.5"}, fill_defaults=False) == ("threshold-gradcam", {"threshold": 0.5})
    assert check_params("raw-attention", {"layer": -1}, fill_defaults=False) == ("raw-attention", {"layer": -1})
    with pytest.raises(ExplainerError, match=r"discard_ratio must be in \[0, 1\)"):
        check_params("rollout", {"discard_ratio": 1.5}, fill_defaults=False)
