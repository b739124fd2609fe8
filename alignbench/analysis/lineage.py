"""Trained models and where they came from, as the store records them (``alignbench models --trained``).

Read-only: a missing store has no trained models; nothing is created or migrated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from alignbench.store import StoreMissing, open_store_to_read
from alignbench.store import queries as q


@dataclass(frozen=True)
class TrainedModel:
    model_id: int
    tag: str | None
    name: str
    dcls: bool
    origin: str
    fingerprint: str
    parent_id: int | None
    parent_name: str | None
    parent_tag: str | None
    parent_dcls: bool | None
    parent_fingerprint: str | None
    lineage: dict[str, Any]
    created_at: datetime | None
    ca_stream: bool = False

    @property
    def label(self) -> str:
        return self.tag or self.fingerprint[:12]

    @property
    def parent_label(self) -> str:
        """The parent in a few words: its kind (and tag) when it is of the same architecture, as usual."""
        if self.parent_name is None:
            return "—"
        kind = "DCLS" if self.parent_dcls else "dense"
        name = kind if self.parent_name == self.name else f"{self.parent_name} ({kind})"
        return f"{name}, {self.parent_tag}" if self.parent_tag else name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def trained_models(db: str | None = None) -> list[TrainedModel]:
    """Every model with an origin in the store at ``db``, newest first."""
    try:
        store = open_store_to_read(db)
    except StoreMissing:
        return []
    try:
        with store.session() as session:
            rows = q.trained_models(session)
    finally:
        store.close()
    return [
        TrainedModel(
            model_id=row.id,
            tag=row.tag,
            name=row.name,
            dcls=row.dcls,
            origin=row.origin,
            fingerprint=row.weights_fingerprint,
            parent_id=row.parent_id,
            parent_name=parent.name if parent else None,
            parent_tag=parent.tag if parent else None,
            parent_dcls=parent.dcls if parent else None,
            parent_fingerprint=parent.weights_fingerprint if parent else None,
            lineage=json.loads(row.lineage) if row.lineage else {},
            created_at=row.created_at,
            ca_stream=row.ca_stream,
        )
        for row, parent in rows
    ]
