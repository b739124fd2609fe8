"""A trained model in the store: its weights file as a model row, with the model it came from and how.

The trained model's request is the parent's with ``checkpoint`` = the written file (so its
fingerprint is that file's sha256, as for any checkpoint) and ``tag`` = the run's name — for a
CA-Stream run, ``stream_checkpoint`` = the file (which holds the stream alone) over the same backbone;
``alignbench score --trained TAG`` loads exactly that request again. ``best.safetensors`` is recorded
too: tag ``TAG@best`` (on the same model as ``TAG`` when the best step is the last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignbench.models import ModelIdentity, ModelRequest, model_identity
from alignbench.store import StoreMissing, StoreOutdated, open_store
from alignbench.store import queries as q

BEST_SUFFIX = "@best"


@dataclass(frozen=True)
class TrainedFile:
    kind: str  # last | best
    path: Path
    lineage: dict[str, Any]  # what this file is (its step, top-1), added to the run's lineage


def trained_request(parent: ModelRequest, checkpoint: Path, tag: str) -> ModelRequest:
    """The request that loads the trained weights: the parent's model and DCLS recipe, the file's weights
    (a CA-Stream's file: the stream's, on the backbone the request names)."""
    if parent.ca_stream:
        return replace(parent, stream_checkpoint=checkpoint, tag=tag)
    return replace(parent, checkpoint=checkpoint, init=None, pretrained=True, tag=tag)


def _replaces_own_file(owner: Any, path: Path) -> bool:
    """Whether ``owner`` (the model a tag names) was recorded from the file at ``path``, which this run
    has now overwritten (a run resumed or extended into the same --out): its tag follows the file."""
    if owner is None or not owner.lineage:
        return False
    return json.loads(owner.lineage).get("checkpoint") == str(path)


def check_tags_free(db: str | None, tag: str, out: Path, *, retag: bool = False) -> None:
    """Before training: raise TagTaken when ``tag`` (or ``TAG@best``) names a model that this run does
    not continue (one recorded from another --out), unless ``retag``. Nothing is created."""
    try:
        store = open_store(db, create=False, migrate=False)
    except (StoreMissing, StoreOutdated):  # no store yet, or one that recording will upgrade: checked then
        return
    with store, store.session() as session:
        for name, file in ((tag, "last.safetensors"), (f"{tag}{BEST_SUFFIX}", "best.safetensors")):
            owner = q.tag_owner(session, name)
            if owner is not None and not _replaces_own_file(owner, out / file):
                q.check_tag(owner, "", name, retag=retag)


def record_trained(
    db: str | None,
    *,
    parent: ModelIdentity,
    parent_request: ModelRequest,
    origin: str,
    tag: str,
    files: list[TrainedFile],
    lineage: dict[str, Any],
    param_count: int,
    family: str,
    parent_param_count: int | None = None,
    retag: bool = False,
) -> tuple[str, dict[str, ModelIdentity]]:
    """Record the parent and each trained file in the store at ``db`` (one transaction); returns the
    store's URL and each file kind's identity. ``parent_request`` is the request that was trained;
    ``parent`` the model it started from (for a fresh CA-Stream: the backbone with its pooling, of
    ``parent_param_count`` parameters).

    Tags: ``TAG`` names last, ``TAG@best`` best (the same model when the best step is the last). A tag
    naming another model is refused (TagTaken) unless ``retag``, or unless that model was recorded from
    the very file this run overwrote (a resumed or extended run into the same --out)."""
    identities: dict[str, ModelIdentity] = {}
    with open_store(db) as store, store.session(write=True) as session:
        parent_count = param_count if parent_param_count is None else parent_param_count
        parent_row = q.upsert_model(session, parent, param_count=parent_count, family=family)
        for file in files:
            name = tag if file.kind == "last" else f"{tag}{BEST_SUFFIX}"
            identity = model_identity(trained_request(parent_request, file.path, name))
            identities[file.kind] = identity
            owner = q.tag_owner(session, name)
            q.record_trained_model(
                session,
                identity,
                origin=origin,
                parent=parent_row,
                param_count=param_count,
                family=family,
                lineage={**lineage, **file.lineage, "parent": parent.fingerprint, "checkpoint": str(file.path), "file": file.kind},
                retag=retag or _replaces_own_file(owner, file.path),
            )
        session.commit()
        return store.url, identities
