"""Distributed data parallel (DDP) plumbing: process context, launch, collective helpers.

Two launch modes for ``training.strategy: ddp``:

* single node: :func:`train <etgnn.train.trainer.train>` spawns ``training.devices`` processes
  with ``torch.multiprocessing.spawn`` (rendezvous on 127.0.0.1 and a free port);
* several nodes (or any launcher): start one process per device with ``torchrun``, e.g.
  ``torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:PORT -m etgnn.cli train cfg.yaml``;
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are read from the
  environment.

The backend is NCCL on GPUs and Gloo on CPUs.  Only rank 0 writes files.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["DistContext", "launched_by_torchrun", "free_port", "init_distributed", "all_reduce_sum",
           "any_rank", "barrier", "cleanup"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True inside a process started by ``torchrun`` (or another launcher setting WORLD_SIZE > 1)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``training.device`` (auto / cpu / cuda) -> a torch device for this process.

    Raises:
        ConfigError: ``cuda`` requested on a machine without a usable GPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("training.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(rank: int, world_size: int, local_rank: int, device_name: str) -> DistContext:
    """Join the process group (env:// rendezvous) and return this process's context."""
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, device)


def all_reduce_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``x`` over ranks in place (no-op on one process); returns ``x``."""
    if ctx.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True if ``flag`` is true on any rank (every rank gets the same answer)."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_over_ranks(value: float, ctx: DistContext) -> float:
    """The largest ``value`` of all ranks (every rank gets the same answer)."""
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
