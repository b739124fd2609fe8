"""Running a study: every cell scored as ``alignbench score`` would (complete runs read from the store),
then the comparison its caller passes in (``alignbench.analysis`` sits above scoring, so the CLI brings it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alignbench.distributed import launched_ranks
from alignbench.errors import AlignbenchError
from alignbench.scoring import ScoreRequest, ScoreResult, score
from alignbench.scoring.study.parse import describe


@dataclass
class StudyRun:
    """What ``run_study`` did: one ScoreResult per cell, in grid order, and the comparison of them."""

    results: list[ScoreResult]
    comparison: Any = None  # what ``compare`` returned (alignbench.analysis.compare.CompareResult), or None

    @property
    def computed(self) -> int:
        return sum(not r.cached for r in self.results)


CellCallback = Callable[[int, int, ScoreRequest], None]  # (cell index, cells, request)
Compare = Callable[[list[ScoreResult]], Any]  # the cells' results → their comparison (None: nothing compares)


def run_study(
    requests: Sequence[ScoreRequest],
    *,
    db: str | None = None,
    on_cell: CellCallback | None = None,
    on_result: Callable[[int, ScoreResult], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    compare: Compare | None = None,
) -> StudyRun:
    """Score every cell (``alignbench.scoring.score``: complete runs are read from the store), then
    compare the study's runs with ``compare`` (the CLI passes ``alignbench.analysis.compare.compare_results``;
    None: no comparison). A cell that fails stops the study with its message, prefixed by the
    cell: every row stored so far stays, and running the study again resumes there.

    Under torchrun every rank runs the same cells in the same order; ``score`` shares each run's
    images among them. The comparison is read on rank 0 only.
    """
    results: list[ScoreResult] = []
    for index, request in enumerate(requests):
        if on_cell is not None:
            on_cell(index, len(requests), request)
        try:
            result = score(request, db=db, progress=progress)
        except AlignbenchError as error:
            raise AlignbenchError(
                f"run {index + 1}/{len(requests)} ({describe(request)}): {error.message}", exit_code=error.exit_code
            ) from None
        results.append(result)
        if on_result is not None:
            on_result(index, result)
    comparison = compare(results) if compare is not None and launched_ranks().is_main else None
    return StudyRun(results, comparison)
