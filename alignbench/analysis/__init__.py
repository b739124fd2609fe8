"""What is stored, analysed: DCLS-vs-baseline comparisons, rankings, the report's tables and figures.

Everything here reads the store and never loads a model or imports torch (``compare`` and ``report``
answer in well under two seconds), except :func:`centre_bias.score_centre_bias`, which ``score``
calls to record the model-free reference run.

- ``runs``: stored runs scored, grouped (dataset × explainer setting × protocol) and paired;
- ``compare``: per-architecture statistics and rankings (``alignbench compare``), and the same for
  trained models against their parents or any two runs;
- ``lineage``: the trained models and their parents (``alignbench models --trained``);
- ``report``: the paper's table and figure data, histograms, worst images (``alignbench report``);
- ``plots``: those figures in the terminal (plotext) and as PNG files (matplotlib);
- ``exports``: CSV / JSON / Markdown through pandas;
- ``stats``: paired bootstrap, Wilcoxon signed-rank, correlations (numpy; tested against scipy);
- ``centre_bias``: the centre-prior map and its stored run.
"""

DEFAULT_BINS = 20  # histogram bins of `report` (here, numpy-free, so the CLI can show the default)
