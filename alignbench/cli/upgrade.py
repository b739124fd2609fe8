"""`alignbench upgrade`: parse options, call alignbench.store.maintenance.upgrade_store, say what changed."""

from __future__ import annotations

import typer

from alignbench.cli import _basic_options as o
from alignbench.cli._errors import guarded


@guarded
def upgrade(db: o.Db = None) -> None:
    """Upgrade a store written by an older alignbench to this one's schema, keeping every row.

    Commands that write (score, convert) upgrade a store as they open it; commands that only read (report, compare, a cached score) never change one and ask for this command instead.

    Example: [bold]alignbench upgrade --db sqlite:///old.db[/]
    """
    from alignbench.store.maintenance import upgrade_store
    from alignbench.store.recheck import runs_to_recheck

    result = upgrade_store(db)
    if result.changed:
        typer.echo(f"upgraded store {result.url} from schema revision {result.before} to {result.after}")
    else:
        typer.echo(f"store {result.url} is already at schema revision {result.after}, this alignbench's newest")
    recheck = runs_to_recheck(db)
    if recheck:
        shown = ", ".join(map(str, recheck[:10])) + (", ..." if len(recheck) > 10 else "")
        typer.echo(
            f"{len(recheck)} run(s) ({shown}) were scored by an older alignbench, which scored constant maps; "
            "`alignbench runs list` marks them (recheck), and `alignbench score` with their options recomputes just those rows"
        )
