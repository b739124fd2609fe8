"""The results store: tables (tables.py), engine from a URL (engine.py), named queries (queries.py)."""

from alignbench.store._check import StoreOutdated
from alignbench.store.engine import DEFAULT_URL, Store, StoreMissing, open_store, resolve_url

__all__ = ["DEFAULT_URL", "Store", "StoreMissing", "StoreOutdated", "open_store", "resolve_url"]
