"""The registry as a table: parameters with and without DCLS, weight sources, offline availability,
and whether (with how many parameters) a CA-Stream fits the model.

Parameter counts come from the architectures built on torch's meta device (no memory, no init),
with the DCLS count computed from the same conversion plan ``load_model`` follows and the
CA-Stream's from the same attachment probe (a forward on the meta device). They are kept in
``<cache>/catalog/params.json`` per (architecture, recipe, timm version), so that after the first
call the table needs neither torch nor timm.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import version

from alignbench._utils.cache import cache_dir
from alignbench.errors import ModelError
from alignbench.models._download import read_record
from alignbench.models._identity import hub_cached_file, packaged_path, published_path
from alignbench.models.specs import MODELS, ModelSpec, get_spec


@dataclass(frozen=True)
class CatalogRow:
    name: str
    family: str
    in_paper: bool
    params: int
    params_dcls: int | None
    recipe: str | None
    recipe_short: str | None
    dense_weights: str
    dcls_weights: str | None
    dcls_url: str | None
    dense_offline: bool
    dcls_offline: bool | None
    ca_stream: bool = False  # whether --ca-stream fits (the stages give feature maps)
    params_ca_stream: int | None = None  # parameters the stream adds

    def as_dict(self) -> dict:
        return asdict(self)


def parameter_counts(spec: ModelSpec) -> tuple[int, int | None, int | None]:
    """(dense, DCLS, CA-Stream) parameter counts of a spec's architecture and recipe (cached, see
    module doc); None where the recipe or the stream does not apply."""
    recipe = json.dumps(spec.dcls.as_dict() if spec.dcls else None, sort_keys=True)
    key = f"{spec.timm_name}|{recipe}|{spec.stage_pattern}|ca-stream 1|timm {version('timm')}"
    path = cache_dir("catalog") / "params.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = list(_count(spec))
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(known, handle)
        os.replace(tmp, path)
    dense, dcls, stream = known[key]
    return dense, dcls, stream


def _count(spec: ModelSpec) -> tuple[int, int | None, int | None]:
    import timm
    import torch

    from alignbench.models import _ca_stream, _dcls

    with torch.device("meta"):
        model = timm.create_model(spec.timm_name, pretrained=False)
    dense = sum(p.numel() for p in model.parameters())
    try:
        attachments = _ca_stream.attachment_plan(model, spec.name)
        stream = _ca_stream.stream_parameter_count(attachments.channels, attachments.out_features)
    except ModelError:  # no stages with feature maps (a ViT, a channels-last model)
        stream = None
    if spec.dcls is None:
        return dense, None, stream
    try:
        targets = _dcls.plan(model, spec.dcls, spec.stage_pattern)
    except ModelError:  # the recipe finds nothing to replace in this architecture
        return dense, None, stream
    return dense, _dcls.count_after(model, targets, spec.dcls), stream


def dense_offline(spec: ModelSpec) -> bool:
    if spec.packaged is not None:
        try:
            return packaged_path(spec).is_file()
        except ModelError:
            return False
    return spec.hub_id is not None and hub_cached_file(spec.hub_id) is not None


def catalog(names: list[str] | None = None) -> list[CatalogRow]:
    """One row per registry model (or per given name, any timm model included)."""
    rows = []
    for spec in (get_spec(name) for name in names) if names else MODELS.values():
        params, params_dcls, params_stream = parameter_counts(spec)
        dense_ok = dense_offline(spec)
        if spec.dcls is None:
            dcls_weights, dcls_ok = None, None
        elif spec.published is not None:
            dcls_weights = spec.dcls_weights_description
            dcls_ok = read_record(published_path(spec)) is not None
        else:
            dcls_weights, dcls_ok = spec.dcls_weights_description, dense_ok
        rows.append(
            CatalogRow(
                name=spec.name,
                family=spec.family,
                in_paper=spec.in_paper,
                params=params,
                params_dcls=params_dcls,
                recipe=spec.dcls.describe() if spec.dcls else None,
                recipe_short=spec.dcls.short() if spec.dcls else None,
                dense_weights=spec.dense_weights_description,
                dcls_weights=dcls_weights,
                dcls_url=spec.published.url if spec.published else None,
                dense_offline=dense_ok,
                dcls_offline=dcls_ok,
                ca_stream=params_stream is not None,
                params_ca_stream=params_stream,
            )
        )
    return rows
