"""The registry: the paper's table as data, generic specs, clear errors, no torch at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignbench.errors import ModelError
from alignbench.models.specs import DEPTHWISE, DEPTHWISE_7X7, EVERY_3X3, MODELS, PAPER_MODELS, DclsRecipe, get_spec

# SPEC.md "Models": convs replaced, dilated kernel size, kernel count, version, Zenodo file and key.
PAPER_TABLE = {
    "resnet50": (EVERY_3X3, 7, 5, "v0", 8373830, "resnet_dcls_kernel_5_model_best.pth.tar", "state_dict_ema", "a1_in1k"),
    "convnext_tiny": (DEPTHWISE, 17, 34, "v0", 7112021, "convnext_dcls_tiny_1k_224_ema.pth", "model", "fb_in1k"),
    "convnext_small": (DEPTHWISE, 17, 40, "v0", 7112021, "convnext_dcls_small_1k_224_ema.pth", "model", "fb_in1k"),
    "convnext_base": (DEPTHWISE, 17, 40, "v0", 7112021, "convnext_dcls_base_1k_224_ema.pth", "model", "fb_in1k"),
    "caformer_s18": (DEPTHWISE, 17, 34, "v1", 8370737, "caformer_s18_v1_17lim_34el_seed0.pth.tar", "state_dict_ema", "sail_in1k"),
    "convformer_s18": (DEPTHWISE, 17, 40, "v1", 8370737, "convformer_s18_v1_17lim_40el_seed0.pth.tar", "state_dict_ema", "sail_in1k"),
    "fastvit_sa24": (DEPTHWISE_7X7, 17, 34, "v1", 8370737, "fastvit_sa24_v1_17lim_34el_seed0.pth.tar", "state_dict_ema", "apple_in1k"),
    "fastvit_sa36": (DEPTHWISE_7X7, 17, 34, "v1", 8370737, "fastvit_sa36_v1_17lim_34el_seed0.pth.tar", "state_dict_ema", "apple_in1k"),
}


@pytest.mark.parametrize("name", list(PAPER_TABLE))
def test_paper_models_match_the_spec_table(name: str) -> None:
    selector, size, count, version, record, filename, key, tag = PAPER_TABLE[name]
    spec = MODELS[name]
    assert spec.in_paper and spec.timm_name == name
    assert spec.dcls == DclsRecipe(version, size, count, selector, "stage")
    assert spec.published.url == f"https://zenodo.org/records/{record}/files/{filename}"
    assert spec.published.key == key
    assert spec.timm_tagged_name == f"{name}.{tag}"
    expected_kind = {"convnext": "convnext", "metaformer": "metaformer"}.get(spec.family, "timm")
    assert spec.paper_kind == spec.preprocessing.paper_kind == expected_kind


def test_eight_paper_models_and_three_offline_ones() -> None:
    assert set(PAPER_MODELS) == set(PAPER_TABLE)
    lite = [spec for spec in MODELS.values() if spec.packaged is not None]
    assert [spec.name for spec in lite] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(spec.preprocessing.mean == spec.preprocessing.std == (0.5, 0.5, 0.5) for spec in lite)
    assert [spec.timm_name for spec in lite] == [f"tf_efficientnet_lite{i}" for i in range(3)]


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_preprocessing_and_hub_agree_with_timm(name: str) -> None:
    from timm.models import get_pretrained_cfg

    spec = MODELS[name]
    cfg = get_pretrained_cfg(spec.timm_tagged_name if spec.pretrained_tag else f"{spec.timm_name}.in1k")
    pre = spec.preprocessing
    assert (3, *pre.input_size) == tuple(cfg.input_size)
    assert (pre.mean, pre.std, pre.interpolation) == (tuple(cfg.mean), tuple(cfg.std), cfg.interpolation)
    assert pre.crop_pct == cfg.crop_pct  # copied from timm's config, not computed
    if spec.hub_id is not None:
        assert spec.hub_id == cfg.hf_hub_id


def test_generic_spec_for_any_timm_name() -> None:
    spec = get_spec("resnet18.tv_in1k")
    assert (spec.timm_name, spec.pretrained_tag, spec.family, spec.generic) == ("resnet18", "tv_in1k", "resnet", True)
    assert spec.dcls.selector == DEPTHWISE and spec.published is None and spec.preprocessing is None
    assert get_spec("convnext_nano").paper_kind == "convnext"
    # Another tag of a registry architecture keeps its recipe and published checkpoint.
    tagged = get_spec("resnet50.tv_in1k")
    assert (tagged.dcls, tagged.published) == (MODELS["resnet50"].dcls, MODELS["resnet50"].published)
    assert tagged.preprocessing is None and tagged.timm_tagged_name == "resnet50.tv_in1k"
    assert get_spec("test_convnext").target_layer == "forward_features"


@pytest.mark.parametrize(
    ("name", "suggestion"), [("convnxt_tiny", "convnext_tiny"), ("efficientnet_lite", "efficientnet_lite0"), ("resnet50.nope", "resnet50")]
)
def test_unknown_names_suggest_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(ModelError, match=rf"unknown model '{name}'.*closest: .*{suggestion}") as error:
        get_spec(name)
    assert "\n" not in error.value.message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_count": 300}, r"kernel count 300 does not fit a 17×17"),
        ({"dilated_kernel_size": 16}, r"must be a positive odd number"),
        ({"version": "v2"}, r"unknown DCLS version 'v2'"),
    ],
)
def test_impossible_recipes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        MODELS["convnext_tiny"].dcls.with_overrides(**kwargs)


def test_registry_and_identity_do_not_import_torch() -> None:
    code = (
        "import sys; import alignbench.models.specs, alignbench.models as m; "
        "m.model_identity('efficientnet_lite0'); m.model_identity('convnext_tiny', dcls=True); "
        "m.resolve_device('cpu'); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
