"""Several processes through torch's own engine: ``torchrun --nproc_per_node N -m alignbench train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; the process group uses
gloo on the CPU and nccl on CUDA, and the model is wrapped in DistributedDataParallel (which
averages the gradients of the ranks' equal shares of each batch). Only rank 0 writes files and the
store; a check that only rank 0 can make (the store) is shared with every rank, so all fail alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from alignbench.errors import AlignbenchError, TrainingError
from alignbench.models import resolve_device


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: str) -> Processes:
    """This process's place among torchrun's (one process alone when not started by torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes(0, 1, torch.device(resolve_device(device)))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        target, backend = torch.device("cuda", local_rank), "nccl"
    else:
        target, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Processes(dist.get_rank(), dist.get_world_size(), target)


def stop(processes: Processes) -> None:
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


def on_main(processes: Processes, check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0; its AlignbenchError is raised on every rank (so none waits forever)."""
    message = None
    if processes.is_main:
        try:
            check()
        except AlignbenchError as error:
            message = error.message
    if processes.distributed:
        shared = [message]
        dist.broadcast_object_list(shared, src=0)
        message = shared[0]
    if message is not None:
        raise TrainingError(message)


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()


def sum_over_ranks(values: torch.Tensor, processes: Processes) -> torch.Tensor:
    if processes.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(value: object, processes: Processes) -> list[object]:
    """Every rank's ``value``, in rank order (on every rank)."""
    if not processes.distributed:
        return [value]
    values: list[object] = [None] * processes.world_size
    dist.all_gather_object(values, value)
    return values
