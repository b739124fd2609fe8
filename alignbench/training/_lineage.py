"""A trained model in the store: its weights file as a model row, with the model it came from and how.

The trained model's request is the parent's with ``checkpoint`` = the written file (so its
fingerprint is that file's sha256, as for any checkpoint) and ``tag`` = the run's name — for a
CA-Stream run, ``stream_checkpoint`` = the file (which holds the stream alone) over the same backbone;
``alignbench score --trained TAG`` loads exactly that request again. ``best.safetensors`` is recorded
too (tag ``TAG@best``) when it differs from ``last.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignbench.models import ModelIdentity, ModelRequest, model_identity
from alignbench.store import open_store
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
) -> tuple[str, dict[str, ModelIdentity]]:
    """Record the parent and each trained file in the store at ``db`` (one transaction); returns the
    store's URL and each file kind's identity. ``parent_request`` is the request that was trained;
    ``parent`` the model it started from (for a fresh CA-Stream: the backbone with its pooling, of
    ``parent_param_count`` parameters)."""
    identities: dict[str, ModelIdentity] = {}
    with open_store(db) as store, store.session(write=True) as session:
        parent_count = param_count if parent_param_count is None else parent_param_count
        parent_row = q.upsert_model(session, parent, param_count=parent_count, family=family)
        seen: set[str] = set()
        for file in files:
            name = tag if file.kind == "last" else f"{tag}{BEST_SUFFIX}"
            identity = model_identity(trained_request(parent_request, file.path, name))
            identities[file.kind] = identity
            if identity.fingerprint in seen:  # best.safetensors holds the same weights as last
                continue
            seen.add(identity.fingerprint)
            q.record_trained_model(
                session,
                identity,
                origin=origin,
                parent=parent_row,
                param_count=param_count,
                family=family,
                lineage={**lineage, **file.lineage, "parent": parent.fingerprint, "checkpoint": str(file.path), "file": file.kind},
            )
        session.commit()
        return store.url, identities
