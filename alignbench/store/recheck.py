"""Runs scored before constant maps became undefined: which ones, read with SQLAlchemy Core alone
(``runs list`` and ``upgrade`` import no ORM).

The process that completes a pass over a run's rows records the scorer's revision in
``run.versions["scorer"]``. Revision 2: constant maps are undefined (``alignbench.metrics.constancy``).
An older scorer wrote no entry (alignbench's own version did not change) and may have stored a score
for a constant map, on a row without a ``skip_reason``: ``score`` recomputes just those rows of such a
run, then records the revision (``queries.rows_to_recheck``, ``queries.stamp_scorer``). Runs scored
after constant maps became undefined but before the revision was recorded cannot be told apart: they
are rechecked too, and their rows come out the same.
"""

from __future__ import annotations

import json

from sqlalchemy import Integer, String, column, exists, select, table

from alignbench.store.engine import open_store

SCORER_REVISION = 2

_run = table("run", column("id", Integer), column("versions", String))
_image_score = table("image_score", column("run_id", Integer))


def scorer_revision(versions: str | None) -> int:
    """The scorer revision a run's ``versions`` JSON records (0: none, an older scorer)."""
    try:
        return int(json.loads(versions or "{}").get("scorer", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


def needs_recheck(versions: str | None) -> bool:
    return scorer_revision(versions) < SCORER_REVISION


def runs_to_recheck(db: str | None) -> list[int]:
    """Ids of the stored runs with rows an older scorer wrote; reads only."""
    with open_store(db, create=False, migrate=False) as store, store.engine.connect() as connection:
        with_rows = exists(select(_image_score.c.run_id).where(_image_score.c.run_id == _run.c.id))
        rows = connection.execute(select(_run.c.id, _run.c.versions).where(with_rows).order_by(_run.c.id)).all()
    return [run_id for run_id, versions in rows if needs_recheck(versions)]
