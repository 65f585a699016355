"""Multi-process training helpers: torchrun's environment, the process group, and the few collectives the trainer
needs (every one a no-op in a single process).

``torchrun --nproc_per_node N`` sets RANK / WORLD_SIZE / LOCAL_RANK; the process group uses nccl on CUDA and gloo on
the CPU. All ranks must call each collective in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.runtime import default_device


@dataclass
class DistEnv:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device_arg: str | None) -> tuple[DistEnv, torch.device]:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group (nccl on CUDA, gloo on CPU)."""
    env = DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                  int(os.environ.get("LOCAL_RANK", 0)))
    name = default_device(device_arg)
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", env.local_rank if env.active else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if env.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env, device


def close_distributed(env: DistEnv) -> None:
    """End the process group this process started (nothing in a single process)."""
    if env.active and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(env: DistEnv, flags: list[bool], device: torch.device) -> list[bool]:
    """OR of boolean flags over ranks (one small all-reduce in DDP)."""
    if not env.active:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(x) for x in t.tolist()]


def gather_objects(env: DistEnv, obj: object) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not env.active:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_count(env: DistEnv, count: int, device: torch.device) -> int:
    """Rank 0's ``count`` on every rank."""
    if not env.active:
        return count
    t = torch.tensor([count], dtype=torch.long, device=device)
    dist.broadcast(t, 0)
    return int(t)
