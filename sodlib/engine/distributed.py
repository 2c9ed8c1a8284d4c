"""Distributed data parallel set-up from ``torchrun``'s environment, and the helpers the loop needs.

``torchrun --nproc-per-node W script.py`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`setup` reads them: with ``WORLD_SIZE > 1`` it joins the process group (NCCL on CUDA,
gloo on the CPU) unless the caller already did; without them it is a single process. So a script that calls
:func:`sodlib.engine.train` runs unchanged under ``python`` and under ``torchrun``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "setup", "teardown", "all_gather_objects", "mean_across_processes"]


@dataclass
class DistributedContext:
    """This process's place in the run: ``rank`` of ``world_size``, its device, and whether :func:`setup`
    joined the process group (and so leaves it in :func:`teardown`)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    started_here: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (torchrun sets it)") from None


def setup(device: str = "auto") -> DistributedContext:
    """Join ``torchrun``'s process group when there is one; pick the device (``"auto"``: this process's GPU, else CPU)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device_obj = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device_obj = torch.device(device)
        if device_obj.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; fix: device='auto' or 'cpu'")
        if device_obj.type == "cuda" and device_obj.index is None:
            device_obj = torch.device("cuda", local_rank)
    if device_obj.type == "cuda":
        torch.cuda.set_device(device_obj)
    started_here = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_obj.type == "cuda" else "gloo")
        started_here = True
    if dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    return DistributedContext(rank, world_size, local_rank, device_obj, started_here)


def teardown(context: DistributedContext) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if context.started_here and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(context: DistributedContext, value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every process (``[value]`` without distribution)."""
    if not context.distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_across_processes(context: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` (``Tensor[K]``) over all processes."""
    if not context.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / context.world_size
