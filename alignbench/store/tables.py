"""The results store's tables (SQLModel). Migrations in migrations/ create exactly these.

Data flows one way into the store: a model, an explainer setting and a dataset are recorded once
each; a run joins them with a protocol and a metric set; image_score holds one row per (run, image).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import Column, ForeignKey, Index, Integer, LargeBinary, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from alignbench.store.listing import METRIC_COLUMNS as METRIC_COLUMNS  # defined with the Core tables that read them
from alignbench.store.listing import THUMBNAIL_KINDS as THUMBNAIL_KINDS  # read by the HTML report without the ORM


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Model(SQLModel, table=True):
    """A model with exactly one set of weights; ``weights_fingerprint`` is its identity."""

    __tablename__ = "model"
    __table_args__ = (UniqueConstraint("weights_fingerprint", name="uq_model_fingerprint"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    family: Optional[str] = None
    dcls: bool = False
    recipe: Optional[str] = None  # canonical JSON of the DCLS recipe; NULL for dense models
    init: Optional[str] = None  # how DCLS weights were obtained: checkpoint, from-dense, random
    weights_source: str = ""
    weights_fingerprint: str
    checkpoint_sha256: Optional[str] = None
    param_count: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)
    # lineage (migration 0003): what a trained or imported model is and where it came from
    tag: Optional[str] = Field(default=None, index=True)  # the user's name for it (--tag)
    origin: Optional[str] = None  # moco-v3, dcls-finetune, gc-consistency, ca-stream, ...
    parent_id: Optional[int] = Field(
        default=None, sa_column=Column(Integer, ForeignKey("model.id", name="fk_model_parent_id_model"), nullable=True)
    )
    lineage: Optional[str] = None  # canonical JSON: method, data fingerprint, steps, hyper-parameters, final loss/top-1
    ca_stream: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    request: Optional[str] = None  # canonical JSON of the ModelRequest that loads it again


class ModelTag(SQLModel, table=True):
    """A user's name for a model (migration 0005): a tag names one model, a model may carry several.

    ``model.tag`` stays the model's first name (what listings show); this table is what a tag
    resolves through (``score --trained TAG``), so a tag can be neither duplicated nor silently moved.
    """

    __tablename__ = "model_tag"
    __table_args__ = (UniqueConstraint("tag", name="uq_model_tag_tag"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    tag: str
    model_id: int = Field(sa_column=Column(Integer, ForeignKey("model.id", ondelete="CASCADE"), nullable=False, index=True))
    created_at: datetime = Field(default_factory=utcnow)


class ExplainerSetting(SQLModel, table=True):
    """An explanation method with all its parameters (defaults filled), as canonical JSON."""

    __tablename__ = "explainer_setting"
    __table_args__ = (UniqueConstraint("method", "params", name="uq_explainer_method_params"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    method: str = Field(index=True)
    params: str = "{}"


class Dataset(SQLModel, table=True):
    """A dataset's content, identified by its fingerprint (a hash of its files)."""

    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("name", "fingerprint", name="uq_dataset_name_fingerprint"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    fingerprint: str
    size: int
    ceiling: Optional[float] = None  # human inter-rater ceiling of the reference maps, if known
    location: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    """model × explainer setting × dataset × protocol × metric set; ``key`` hashes exactly these."""

    __tablename__ = "run"
    __table_args__ = (
        UniqueConstraint("key", name="uq_run_key"),
        # compare/report group runs of one dataset, explainer and protocol
        Index("ix_run_dataset_explainer_protocol", "dataset_id", "explainer_id", "protocol"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    key: str
    model_id: int = Field(sa_column=Column(Integer, ForeignKey("model.id"), nullable=False, index=True))
    explainer_id: int = Field(sa_column=Column(Integer, ForeignKey("explainer_setting.id"), nullable=False))
    dataset_id: int = Field(sa_column=Column(Integer, ForeignKey("dataset.id"), nullable=False))
    protocol: str
    metrics: str  # comma-separated metric names, sorted
    status: str = "running"  # running | partial | complete | failed
    n_images: int = 0  # images in the dataset (a complete run has one row for each)
    compute_seconds: float = 0.0
    device: Optional[str] = None
    versions: str = "{}"  # JSON: alignbench, torch, timm, ... of the last process that wrote rows
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # migration 0003: the forward pass's precision (part of the key unless fp32), and the process that
    # last wrote the run, so a run whose process is gone shows as interrupted, not running
    precision: str = Field(default="fp32", sa_column_kwargs={"server_default": "fp32"})
    pid: Optional[int] = None
    host: Optional[str] = None
    heartbeat_at: Optional[datetime] = None


class ImageScore(SQLModel, table=True):
    """One image of one run: target, prediction and one column per metric (NULL = skipped)."""

    __tablename__ = "image_score"
    __table_args__ = (UniqueConstraint("run_id", "image_id", name="uq_image_score_run_image"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(sa_column=Column(Integer, ForeignKey("run.id", ondelete="CASCADE"), nullable=False))
    image_index: int  # position in the dataset's image order
    image_id: str
    target: Optional[int] = None
    prediction: Optional[int] = None
    confidence: Optional[float] = None  # softmax probability of the prediction
    spearman: Optional[float] = None
    # localisation and faithfulness metrics of the related studies (migration 0002)
    pointing_game: Optional[float] = None
    stochastic_pointing_game: Optional[float] = None
    energy_in_box: Optional[float] = None
    deletion: Optional[float] = None
    insertion: Optional[float] = None
    average_drop: Optional[float] = None
    average_increase: Optional[float] = None
    average_gain: Optional[float] = None
    # the saliency benchmark's fixation metrics (migration 0004)
    nss: Optional[float] = None
    auc_judd: Optional[float] = None
    auc_borji: Optional[float] = None
    sauc: Optional[float] = None
    cc: Optional[float] = None
    kl: Optional[float] = None
    sim: Optional[float] = None
    ig: Optional[float] = None
    skip_reason: Optional[str] = None  # why a metric is NULL (constant map, non-finite map, ...)
    created_at: datetime = Field(default_factory=utcnow)


class Thumbnail(SQLModel, table=True):
    """A small 8-bit PNG of one image's picture or map in one run, for the HTML report's galleries.

    ``kind``: ``image`` (the model input), ``reference`` (the human map) or ``model`` (the run's
    explanation), see ``THUMBNAIL_KINDS``; ``vmin``/``vmax``: the value range the map was quantised
    from, so maps can be shown on one shared colour scale.
    """

    __tablename__ = "thumbnail"
    __table_args__ = (UniqueConstraint("run_id", "image_id", "kind", name="uq_thumbnail_run_image_kind"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(sa_column=Column(Integer, ForeignKey("run.id", ondelete="CASCADE"), nullable=False))
    image_id: str
    kind: str
    png: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    vmin: Optional[float] = None
    vmax: Optional[float] = None
    created_at: datetime = Field(default_factory=utcnow)
