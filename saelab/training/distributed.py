"""Data-parallel training on PyTorch's own engine: `torchrun` starts the processes, an all-reduce after each
backward averages the gradients (gloo on CPUs, NCCL on GPUs).

Every rank iterates over the same sequence of *global* batches (the batch order is a pure function of the
seed) and trains on its own disjoint slice of rows of each one, so N ranks with a per-rank batch of B/N
take the same steps as one process with batch B. What is not a gradient is kept identical by hand: dead-latent
counts are summed over ranks, input scales averaged, resampled latents broadcast from rank 0, logged
metrics averaged. Rank 0 alone writes checkpoints, saved SAEs and metric rows. Architectures whose step
selects over the whole batch (BatchTopK: `Architecture.selects_over_batch`) are refused: each rank would
select over its own slice and their thresholds would drift apart.

Not DistributedDataParallel: its reducer holds the works of the last gradient buckets until the interpreter
is torn down, and gloo's worker threads then release their Python tensors during finalisation: on a loaded
machine a rank aborted at exit ("terminate called without an active exception") after training succeeded, in 3
of 24 two-process runs (0 of 51 with the all-reduce below). An SAE has a handful of parameters; one in-place
all-reduce each costs what DDP's buckets did.

The same abort remained possible whenever a rank exits right after a collective (a rank stopping on a
diverged loss did, once in a CI run): a gloo worker thread may drop the last reference to a communicated
tensor after the caller's wait returned, and with torch 2.13 `destroy_process_group` does not join those
threads once `torch._dynamo` is imported. So a process of a group ends through `exit_process`, which skips
the interpreter's finalisation, where the abort happens.
"""

import atexit
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


class World(NamedTuple):
    """This process's place among the training processes."""

    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE_PROCESS = World(0, 1)
"""The world of a run without a process group."""


def current_world() -> World:
    """(rank, size) of the initialised process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return SINGLE_PROCESS


def init_from_env(device: str | torch.device = "cpu") -> World:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE > 1); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(leave_process_group)
        logger.info(
            "rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend
        )
    return current_world()


def leave_process_group() -> None:
    """Destroy the process group (a no-op without one); `init_from_env` registers it to run at exit, while
    the interpreter is still whole (as PyTorch asks of every program that creates a group)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End this process of a process group with `code`: leave the group, flush logging and the standard
    streams, then `os._exit`, skipping the interpreter's finalisation (other atexit handlers included),
    where a gloo thread releasing a communicated tensor aborts the process (see the module's docstring).
    Call it last, once every file this rank writes is closed."""
    try:
        leave_process_group()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:  # a failing flush (a closed pipe) or group teardown must not send the process into finalisation
        os._exit(code)


def local_batch_size(batch_size: int, world: World) -> int:
    """Rows each rank trains on per step; the global batch must split evenly."""
    if batch_size % world.size:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world.size} processes; "
                         f"use a multiple of {world.size}")
    return batch_size // world.size


class RankSlice:
    """This rank's rows [rank*n, (rank+1)*n) of each global batch; resumable like the iterator it wraps."""

    def __init__(self, batches: Iterable[dict[str, Tensor]], world: World) -> None:
        self._iterator = iter(batches)
        self.world = world

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self

    def __next__(self) -> dict[str, Tensor]:
        batch = next(self._iterator)
        return {site: rows.chunk(self.world.size)[self.world.rank] for site, rows in batch.items()}

    def __getattr__(
        self, name: str
    ) -> Any:  # state_dict / load_state_dict when the wrapped iterator has them
        if name in ("state_dict", "load_state_dict"):
            return getattr(self._iterator, name)
        raise AttributeError(name)


def average_gradients_(module: torch.nn.Module, world: World) -> None:
    """Replace each parameter's gradient by its mean over ranks, in place (a no-op with one process). A rank
    without a gradient for a parameter another rank has counts as a zero one; a parameter no rank has a
    gradient for keeps none, as it would in one process (so the optimiser skips it there too)."""
    if not world.distributed:
        return
    parameters = list(module.parameters())
    holders = sum_over_ranks(torch.tensor([float(p.grad is not None) for p in parameters]), world)
    for parameter, count in zip(parameters, holders.tolist(), strict=True):
        if count == 0:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
        parameter.grad.div_(world.size)


def sum_over_ranks(tensor: Tensor, world: World) -> Tensor:
    """The elementwise sum of `tensor` over ranks (the tensor itself with one process)."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_over_ranks(values: list[float], world: World) -> list[float]:
    """The mean of each value over ranks."""
    if not world.distributed:
        return values
    total = sum_over_ranks(torch.tensor(values, dtype=torch.float64), world)
    return (total / world.size).tolist()


def broadcast_module_and_optimizer_(module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                    world: World) -> None:
    """Make every rank's parameters and optimiser moments equal rank 0's (after a rank-local change)."""
    if not world.distributed:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                dist.broadcast(value, src=0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
