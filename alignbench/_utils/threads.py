"""torch's thread count, set for a block: ``one_torch_thread()`` and ``for_each_row()``.

The setting is process-wide (other Python threads running torch meanwhile see it too) and is
restored on exit. Uses:

- the dataset items, whose bilinear resize gives results that differ in the last bits with the
  thread count (torch's CPU kernel splits rows between threads): on one thread everywhere, an item is
  the same in a DataLoader worker (which torch runs on one thread) and in the main process, so a
  score does not depend on ``--workers``;
- the per-row radix sorts of a Spearman ranking: torch splits one row's sort between its OpenMP
  threads and waits for the slowest at every pass, so a busy core stalls them all. ``for_each_row``
  instead hands whole rows to as many Python threads as torch had, each sorting on one torch thread
  and taking the next row when done (torch releases the GIL inside the sort): on this 2-core machine
  0.30 ms per 224×224 row, against 0.41–0.47 with torch's two threads per row and 0.55 with one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


@contextmanager
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pool(helpers: int) -> ThreadPoolExecutor:
    key = (os.getpid(), helpers)
    pool = _POOLS.get(key)
    if pool is None:
        if any(pid != key[0] for pid, _ in _POOLS):
            _POOLS.clear()  # inherited through fork: a child has none of the parent's threads
        pool = _POOLS[key] = ThreadPoolExecutor(helpers, thread_name_prefix="alignbench-rows")
    return pool


def for_each_row(n_rows: int, work: Callable[[int], None]) -> None:
    """``work(r)`` for every r in range(n_rows), spread over torch's thread count of Python threads
    (this one included), each running torch on one thread; rows are taken in turn."""
    threads = min(torch.get_num_threads(), n_rows)
    rows = itertools.count()  # next() on it is atomic under the GIL

    def drain() -> None:
        torch.set_num_threads(1)  # this thread's own OpenMP setting (a helper thread's first call)
        while (row := next(rows)) < n_rows:
            work(row)

    with one_torch_thread():
        helpers = [_pool(threads - 1).submit(drain) for _ in range(threads - 1)] if threads > 1 else []
        try:
            drain()
        finally:
            for helper in helpers:
                helper.result()
