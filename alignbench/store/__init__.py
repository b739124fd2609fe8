"""The results store: tables (tables.py), engine from a URL (engine.py), named queries (queries.py),
Core-only reads for listing runs (listing.py), URL helpers (urls.py, a leaf)."""

from alignbench.store._check import StoreOutdated
from alignbench.store.engine import Store, StoreMissing, open_store, open_store_to_read
from alignbench.store.urls import DEFAULT_URL, resolve_url

__all__ = ["DEFAULT_URL", "Store", "StoreMissing", "StoreOutdated", "open_store", "open_store_to_read", "resolve_url"]
