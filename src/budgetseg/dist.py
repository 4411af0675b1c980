"""Processes and cores: this process's rank among torchrun's, barriers and gathers across ranks, the share of the
machine's cores a rank may use. Without torchrun every helper is a no-op for one process (SINGLE)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place: rank among `world` processes, and the device it computes on."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()  # one process, no DDP


def init_distributed() -> Dist:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on GPU), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if world > 1 and not cuda:
        # Ranks share the machine's cores: oversubscribed threads make every rank slower.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(dist.get_rank() if world > 1 else 0, world, device)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def gather_objects(d: Dist, obj):
    """List of `obj` from every rank (in rank order); [obj] without DDP."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def shard(items: list, d: Dist) -> list:
    """This rank's contiguous share of `items`: concatenated in rank order, the shares give `items` back."""
    n = len(items)
    return items[d.rank * n // d.world : (d.rank + 1) * n // d.world]


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, else the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(requested: int | None, d: Dist) -> int:
    """Worker processes for a DataLoader: `requested`, or from the machine (None): on CUDA the rank's share of
    the cores less the main process's, at most 8; on CPU none where a rank has at most 2 cores, since the
    workers would take them from the model's own threads."""
    if requested is not None:
        return requested
    cores = max(1, machine_cores() // d.world)
    if d.device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else min(4, cores // 2)
