"""Training on several processes (GPUs, nodes) with torch.distributed, as torchrun starts them.

Every process trains the same network on its own share of each step's photos;
DistributedDataParallel averages the gradients, so N processes of batch B take
the same steps as one process of batch N*B (exactly so for instance norm, whose
statistics are per image). Only the main process (rank 0) writes files or reports.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stylize.errors import InvalidSetting, StylizeError
from stylize.model.norms import CONDITIONAL_NORMS


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one training run."""

    rank: int = 0
    local_rank: int = 0  # the process's index on its own machine: its GPU
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environment(cls) -> World:
        """What torchrun (or any launcher using its variables) says; one process otherwise."""
        try:
            return cls(
                rank=int(os.environ.get("RANK", 0)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                size=int(os.environ.get("WORLD_SIZE", 1)),
            )
        except ValueError:
            raise StylizeError(
                "RANK, LOCAL_RANK and WORLD_SIZE must be whole numbers (as torchrun sets them)"
            ) from None


def rank_label() -> str:
    """``[rank N] `` in a run of several processes, to tell their messages apart."""
    rank, size = os.environ.get("RANK", ""), os.environ.get("WORLD_SIZE", "1")
    return f"[rank {rank}] " if rank and size.strip() not in ("", "1") else ""


@contextlib.contextmanager
def process_group(world: World) -> Iterator[None]:
    """Join the run's process group (gloo for CPU tensors, NCCL for CUDA ones)
    unless there is one process or this process joined already."""
    if not world.is_distributed or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise StylizeError("this PyTorch build has no torch.distributed; train with one process")
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def process_device(device: torch.device, world: World) -> torch.device:
    """Each process on a machine gets its own GPU: ``cuda`` means ``cuda:LOCAL_RANK``."""
    if device.type != "cuda" or not world.is_distributed:
        return device
    if device.index is not None:
        raise InvalidSetting(
            "device", "must be cuda (or auto) under torchrun: each process takes GPU number LOCAL_RANK"
        )
    if world.local_rank >= torch.cuda.device_count():
        raise StylizeError(
            f"process {world.rank} wants GPU {world.local_rank} but this machine has {torch.cuda.device_count()}; "
            "start at most one process per GPU (torchrun --nproc_per_node)"
        )
    chosen = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(chosen)
    return chosen


def has_batch_norm(network: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in network.modules())


def check_sync_batch_norm(network: nn.Module, device: torch.device, norm: str) -> None:
    if not has_batch_norm(network):
        raise InvalidSetting("sync_bn", f"synchronizes batch-norm statistics; the {norm} norm has no batch-norm layers")
    if norm in CONDITIONAL_NORMS:
        # convert_sync_batchnorm would swap each layer for a plain SyncBatchNorm, losing its per-style γ and β.
        raise InvalidSetting(
            "sync_bn", f"cannot synchronize the {norm} norm (its per-style scale and shift would be lost)"
        )
    if device.type != "cuda":
        raise InvalidSetting("sync_bn", "needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU")


def parallel(network: nn.Module, world: World, device: torch.device, sync_batch_norm: bool) -> nn.Module:
    """``network`` as each process trains it: DistributedDataParallel across
    processes, with batch norm synchronized across all their batches if asked.

    The returned module shares ``network``'s parameters; save ``network``.
    """
    if not world.is_distributed:
        return network
    if sync_batch_norm:
        synchronize_batch_norm(network)
    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def synchronize_batch_norm(network: nn.Module) -> None:
    """Swap every batch-norm layer for a SyncBatchNorm in place, keeping its
    parameters (the optimizer holds them) and state-dict keys (model files)."""
    for name, child in network.named_children():
        setattr(network, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))


def mean_over_processes(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``values`` over all processes (every process gets it)."""
    if not world.is_distributed:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world.size


def union_over_processes(items: set[str], world: World) -> set[str]:
    if not world.is_distributed:
        return items
    gathered: list[set[str] | None] = [None] * world.size
    dist.all_gather_object(gathered, items)
    return set().union(*(found for found in gathered if found))


def wait_for_all(world: World) -> None:
    if world.is_distributed:
        dist.barrier()
