"""Looking after a store: upgrading its schema, listing and deleting runs (``alignbench upgrade``,
``alignbench runs``). Each function opens the store itself, so the CLI only parses and prints."""

from __future__ import annotations

from dataclasses import dataclass

from alignbench.errors import StoreError
from alignbench.store._check import StoreOutdated, read_state, shown_url
from alignbench.store.engine import StoreMissing, open_store, resolve_url
from alignbench.store.migrate import head_revision


@dataclass(frozen=True)
class Upgrade:
    url: str  # as shown (no password)
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade_store(db: str | None = None) -> Upgrade:
    """Migrate the existing store at ``db`` to this alignbench's head revision, in one transaction.

    A missing or empty store, another program's database, a damaged store or one from a newer
    alignbench is refused (StoreError, exit code 2) and left as it is.
    """
    url = resolve_url(db)
    try:
        with open_store(url, create=False, migrate=False):
            return Upgrade(shown_url(url), head_revision(), head_revision())
    except StoreMissing as missing:
        raise StoreError(f"nothing to upgrade: {missing.message.split(';')[0]}") from None
    except StoreOutdated as old:
        before = old.revision
    with open_store(url, create=False, migrate=True) as store:
        after = read_state(store.engine).revision
    return Upgrade(shown_url(url), before, after)
