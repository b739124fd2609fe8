"""``one_torch_thread()``: torch on one thread inside a block.

The setting is process-wide (other Python threads running torch meanwhile see it too) and is
restored on exit. Two uses: the radix sort of a Spearman ranking, which gains little from a second
thread and loses when the other core is busy, and the dataset items, whose bilinear resize gives
results that differ in the last bits with the thread count (torch's CPU kernel splits rows between
threads) — on one thread everywhere, an item is the same in a DataLoader worker (which torch runs on
one thread) and in the main process, so a score does not depend on ``--workers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


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
