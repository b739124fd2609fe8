"""Several processes on one run through torch.distributed, as launched by torchrun (gloo on the CPU,
nccl on GPUs): the one torchrun layer of scoring and training.

Every launch joins the same way (``join_launch``): one process group with ``COLLECTIVE_TIMEOUT``,
destroyed at exit, and a SIGTERM from torchrun (another rank failed) turned into one line. A peer
that is gone at a collective is one line too.

Scoring: ``torchrun --nproc_per_node N -m alignbench score ...`` (or ``study run``) starts N copies of the
command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Within every run, rank
0 lists the images still missing from the store and broadcasts that list; rank r computes every N-th
of them from position r, on its own device (``cuda:LOCAL_RANK``), and commits its own rows in its own
transactions. All ranks then meet (``all_done``), and rank 0 prints the summary read from the store.
Nothing but the list of missing images (and whether a run is complete) goes through
torch.distributed: the store is where results meet. A rank that dies leaves its committed rows; torchrun
stops the others, and the next launch (any number of processes) computes only what is missing.

Training: ``torchrun --nproc_per_node N -m alignbench train ...`` wraps the model in
DistributedDataParallel (which averages the gradients of the ranks' equal shares of each batch).
Only rank 0 writes files and the store; a check that only rank 0 can make (the store) is shared with
every rank (``on_main``), so all fail alike.

Without torchrun, every function here is a no-op that imports nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from alignbench.errors import AlignbenchError

if TYPE_CHECKING:  # pragma: no cover
    import torch

T = TypeVar("T")

# How long a rank waits for the others at a collective (broadcast, the end of a run): model downloads and first-time
# dataset indexing happen on every rank before the first one, and ranks finish a run up to a batch
# apart. torch's defaults (10 min for nccl) would turn a slow download into a crash.
COLLECTIVE_TIMEOUT = timedelta(hours=2)

# What a stopped rank leaves behind, said after its one line (a launch of ``score`` or ``study run``;
# ``train`` passes its own to ``join_launch``).
ROWS_KEPT = "the rows stored so far are kept and the same command resumes"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one launch."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # set once the process group is initialised
    kept: str = field(default=ROWS_KEPT, compare=False, repr=False)  # what a failed launch leaves (its errors say it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}" if self.distributed else "one process"


SINGLE = Ranks()


def launched_ranks() -> Ranks:
    """The ranks torchrun gave this process (from its environment; torch-free)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return SINGLE
    return Ranks(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """True unless this is a torchrun rank other than 0 (the CLI prints only on rank 0)."""
    return launched_ranks().is_main


_joined: list[Ranks] = []  # the process group this process initialised (one per launch)
_handler_owner: list[int] = []  # the rank's own process id (forked DataLoader workers inherit the handler)


def join_launch(device: str = "auto", *, kept: str = ROWS_KEPT) -> Ranks:
    """This process's ranks, with torch.distributed initialised once under torchrun (destroyed at exit).

    ``device`` (``--device``) picks the backend: nccl when the ranks run on CUDA, gloo otherwise.
    ``kept`` ends the one-line errors of a rank stopped by torchrun or left alone at a collective.
    Alone (no torchrun): ``SINGLE``, and torch is not imported.
    """
    ranks = launched_ranks()
    if not ranks.distributed:
        return ranks
    if _joined:
        return _joined[0]
    import atexit

    import torch
    import torch.distributed as dist

    from alignbench.models import resolve_device  # here, not at the top: the CLI imports this module for is_main_process

    on_cuda = resolve_device(device).startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(ranks.local_rank)
    backend = "nccl" if on_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    atexit.register(dist.destroy_process_group)
    _handler_owner.append(os.getpid())
    signal.signal(signal.SIGTERM, _stopped_by_torchrun)
    _joined.append(replace(ranks, backend=backend, kept=kept))
    return _joined[0]


def _stopped_by_torchrun(signum: int, frame: object) -> None:
    """torchrun stops every rank (SIGTERM) when one fails: say so in one line, rows kept (each batch
    was its own transaction), instead of dying silently or with a traceback."""
    if os.getpid() not in _handler_owner:  # a forked DataLoader worker: die as it would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return

    ranks = _joined[0] if _joined else launched_ranks()
    raise AlignbenchError(
        f"rank {ranks.rank} stopped: torchrun ends every process when one fails (see its report); {ranks.kept}",
        exit_code=128 + signum,
    )


def rank_device(device: str, ranks: Ranks) -> str:
    """This rank's device: ``cuda`` means ``cuda:LOCAL_RANK`` under torchrun (one GPU per process)."""
    if ranks.distributed and device == "cuda":
        return f"cuda:{ranks.local_rank}"
    return device


def agree(ranks: Ranks, value: T) -> T:
    """Rank 0's ``value`` on every rank (so all ranks take the same branch, and meet the same collectives)."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    box = [value if ranks.is_main else None]
    _collective(ranks, lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def my_share(ranks: Ranks, todo: Callable[[], Sequence[int]]) -> list[int]:
    """This rank's share of the positions ``todo()`` lists on rank 0: every world_size-th from ``rank``.

    Only rank 0 calls ``todo`` (it reads the store before any rank of this run has written), so all
    ranks split one list, whatever each would have read.
    """
    if not ranks.distributed:
        return list(todo())
    positions = agree(ranks, list(todo()) if ranks.is_main else None)
    return positions[ranks.rank :: ranks.world_size]


def all_done(ranks: Ranks, count: int) -> int:
    """Wait until every rank is here (the end of a run: all its rows are committed); returns the sum
    of ``count`` over the ranks (the images the launch computed)."""
    if not ranks.distributed:
        return count
    import torch.distributed as dist

    counts: list[int | None] = [None] * ranks.world_size
    _collective(ranks, lambda: dist.all_gather_object(counts, int(count)))
    return sum(int(c or 0) for c in counts)


def on_main(ranks: Ranks, check: Callable[[], None], error: type[AlignbenchError] = AlignbenchError) -> None:
    """Run ``check`` on rank 0; its AlignbenchError is raised on every rank as ``error`` (so none waits forever)."""
    message = None
    if ranks.is_main:
        try:
            check()
        except AlignbenchError as failure:
            message = failure.message
    message = agree(ranks, message)
    if message is not None:
        raise error(message)


def sum_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """``values`` summed element-wise over the ranks (on every rank)."""
    if not ranks.distributed:
        return values
    import torch.distributed as dist

    values = values.clone()
    _collective(ranks, lambda: dist.all_reduce(values, op=dist.ReduceOp.SUM))
    return values


def gather_objects(value: T, ranks: Ranks) -> list[T]:
    """Every rank's ``value``, in rank order (on every rank)."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    values: list = [None] * ranks.world_size
    _collective(ranks, lambda: dist.all_gather_object(values, value))
    return values


def _collective(ranks: Ranks, call: Callable[[], object]) -> None:
    """Run a collective; a peer that died (its connection closed, a timeout) is one line, not a traceback."""
    try:
        call()
    except RuntimeError as error:  # torch.distributed.DistBackendError and gloo's errors are RuntimeErrors
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise AlignbenchError(
            f"rank {ranks.rank}: another process of this launch is gone ({reason[:200]}); {ranks.kept}",
            exit_code=1,
        ) from None
