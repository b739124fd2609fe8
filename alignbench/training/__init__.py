"""Training for alignment: DCLS positions, Grad-CAM consistency, the neural harmonizer, CA-Stream, and the runs' lineage in the store.

``train(TrainRequest)`` is ``alignbench train`` (see ``_train`` for the loop, which reads like
timm's train.py); ``gc_consistency_loss`` is Pillai & Pirsiavash's loss as a pure function of
(model, batch), with ``build_composite`` making its 2×2 grids; ``harmonizer_loss`` is Fel et al.'s
(serre-lab/Harmonization), trained towards a dataset's human maps by ``--harmonize``. This package may import models,
explainers, datasets and the store; nothing below it imports it.

Importing it does not import torch: the request and the registries of methods and freeze modes are
plain data the CLI reads; the rest loads torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignbench._utils.lazy import lazy_attributes
from alignbench.training._request import (
    FREEZE_MODES,
    METHODS,
    PAPER_GC_LAMBDA,
    POSITIONS_LR_FACTOR,
    POSITIONS_OFFSET,
    SAMPLE_DATA,
    SCHEDULES,
    SELF_TEACHER,
    FreezeMode,
    Method,
    TrainRequest,
    position_parameters,
)

__all__ = [
    "FREEZE_MODES",
    "METHODS",
    "PAPER_GC_LAMBDA",
    "POSITIONS_LR_FACTOR",
    "POSITIONS_OFFSET",
    "SAMPLE_DATA",
    "SCHEDULES",
    "SELF_TEACHER",
    "CrossEntropy",
    "Distillation",
    "EvalRecord",
    "Forward",
    "FreezeMode",
    "GradCamConsistency",
    "Harmonization",
    "LabelledImages",
    "LossTerm",
    "Method",
    "StepRecord",
    "TrainRequest",
    "TrainResult",
    "TrainingInterrupted",
    "TrainingStep",
    "WeightL2",
    "build_composite",
    "consistency_map",
    "freeze",
    "gc_consistency_loss",
    "harmonizer_loss",
    "open_training_data",
    "param_groups",
    "paste_into_quadrants",
    "position_parameters",
    "train",
    "train_one_epoch",
    "validate",
]

# public name -> private module that defines it (imports torch; loaded on first use)
_LAZY = {
    **dict.fromkeys(("LabelledImages", "open_training_data"), "alignbench.training._data"),
    **dict.fromkeys(
        ("build_composite", "consistency_map", "gc_consistency_loss", "paste_into_quadrants"), "alignbench.training._gc_consistency"
    ),
    **dict.fromkeys(
        ("CrossEntropy", "Distillation", "Forward", "GradCamConsistency", "LossTerm", "TrainingStep"), "alignbench.training._objective"
    ),
    **dict.fromkeys(("Harmonization", "WeightL2", "harmonizer_loss"), "alignbench.training._harmonizer"),
    **dict.fromkeys(("freeze", "param_groups"), "alignbench.training._params"),
    **dict.fromkeys(
        ("EvalRecord", "StepRecord", "TrainingInterrupted", "TrainResult", "train", "train_one_epoch", "validate"),
        "alignbench.training._train",
    ),
}

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.training._data import LabelledImages, open_training_data
    from alignbench.training._gc_consistency import build_composite, consistency_map, gc_consistency_loss, paste_into_quadrants
    from alignbench.training._harmonizer import Harmonization, WeightL2, harmonizer_loss
    from alignbench.training._objective import CrossEntropy, Distillation, Forward, GradCamConsistency, LossTerm, TrainingStep
    from alignbench.training._params import freeze, param_groups
    from alignbench.training._train import EvalRecord, StepRecord, TrainingInterrupted, TrainResult, train, train_one_epoch, validate


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
