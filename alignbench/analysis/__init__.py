"""What is stored, analysed: DCLS-vs-baseline comparisons, rankings, the report's tables and figures.

Everything here reads the store and never loads a model or imports torch (``compare`` and ``report``
answer in well under two seconds); the model-free centre-bias reference run is scored by
``alignbench.scoring.centre_bias``, and the HTML report is ``alignbench.html_report``.

- ``runs``: stored runs scored, grouped (dataset × explainer setting × protocol) and paired;
- ``compare``: per-architecture statistics and rankings (``alignbench compare``), and the same for
  trained models against their parents or any two runs;
- ``lineage``: the trained models and their parents (``alignbench models --trained``);
- ``report``: the paper's table and figure data, histograms, worst images (``alignbench report``);
- ``plots``: those figures in the terminal (plotext) and as PNG files (matplotlib);
- ``exports``: CSV / JSON / Markdown through pandas;
- ``stats``: paired bootstrap, Wilcoxon signed-rank, correlations (numpy; tested against scipy);
- ``_queries``: the read-only SQL that compare and report need beyond ``alignbench.store.queries``.
"""

DEFAULT_BINS = 20  # histogram bins of `report` (here, numpy-free, so the CLI can show the default)
# what compare, report and the HTML report say of an empty or missing store
NOTHING_STORED = "no runs stored yet; run `alignbench score` first (it scores the embedded default model in seconds)"
