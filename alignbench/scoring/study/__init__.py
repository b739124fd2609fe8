"""Studies: a whole grid of runs as data, run as one resumable command (``alignbench study run``).

A study is a TOML file (or a built-in name: ``paper``, ``demo``, in ``alignbench/data/studies``)::

    name = "my-study"
    protocols = ["aligned"]                 # aligned | paper
    metrics = ["spearman"]                  # the metric set of every run

    [[model]]                               # keys: the fields of alignbench.models.ModelRequest
    name = ["resnet50", "convnext_tiny"]    # a list expands: one model per value (the product
    dcls = [false, true]                    # over every list-valued key)

    [[model]]
    name = "efficientnet_lite0"
    dcls = true
    checkpoint = "weights/lite0_dcls.safetensors"   # relative to the study file (so are head, stream_checkpoint)

    [[model]]
    name = "resnet50"
    ca_stream = true                        # a CA-Stream, its weights in stream_checkpoint
    stream_checkpoint = "runs/r50-ca/last.safetensors"

    [[model]]
    trained = ["lite0-dcls-pos", "lite0-gc"]   # models `alignbench train` recorded, by tag (alone in its table)

    [[explainer]]
    method = "threshold-gradcam"            # any other key is a parameter of the method
    threshold = [0.2, 0.3]

    [[dataset]]
    name = "clickme-val"
    data_dir = "/data/clickme/val"          # optional; relative to the study file
    # fixation_sigma = 20                   # eye-tracking datasets only: the density's blur in px

    [metric_params.deletion]                # optional: parameters of a metric
    steps = 50

    [run]                                   # optional: fields of alignbench.scoring.ScoreRequest
    batch_size = 16                         # shared by every run (limit, precision, workers, ...)
    precision = "fp32"

The grid is datasets × protocols × explainers × models; each cell is one ``ScoreRequest``, scored
exactly as ``alignbench score`` would (same run key), so complete cells are answered from the store
and a study that stops resumes where it stopped. A model entry's keys are ModelRequest's fields,
read from the dataclass (a field added there is a study key at once; ``-`` may stand for ``_``).
Every mistake in the file is one line naming the file, the line and the key.

``study_status`` answers from the store alone (no torch for registry models): done, partial or
missing per cell, with image counts.

- ``parse``: the file read and checked into a ``Study`` (``load_study``);
- ``run``: every cell scored, then the comparison the caller passes in (``run_study``);
- ``status``: the cells as the store has them (``study_status``).
"""

from __future__ import annotations

from alignbench.scoring.study.parse import BUILT_IN_STUDIES, Study, StudyDataset, StudyError, describe, load_study
from alignbench.scoring.study.run import CellCallback, Compare, StudyRun, run_study
from alignbench.scoring.study.status import CellStatus, study_status

__all__ = [
    "BUILT_IN_STUDIES",
    "CellCallback",
    "CellStatus",
    "Compare",
    "Study",
    "StudyDataset",
    "StudyError",
    "StudyRun",
    "describe",
    "load_study",
    "run_study",
    "study_status",
]
