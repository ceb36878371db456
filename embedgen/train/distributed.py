"""Training on several processes: torchrun's environment, the process group, and the few
collectives the training loop needs.

``torchrun --nproc_per_node N -m embedgen train ...`` starts N copies of the command, each with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment. :func:`process_group` joins them
for the time of a run: NCCL when the run is on CUDA GPUs (each process on ``cuda:LOCAL_RANK``),
gloo on the CPU. Every helper here is a no-op in a single process, so the loop calls them
without asking; rank 0 is the process that writes files and reports (:func:`is_main`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from embedgen.errors import BadConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows per broadcast: bounds the GPU memory a NCCL broadcast of all the features takes.
BROADCAST_ROWS = 65_536


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_distributed() -> bool:
    """Whether this process trains together with others now (their process group is up)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes training together now: 1 until the process group is up."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank: from the process group, or before it is up from ``RANK``."""
    return dist.get_rank() if is_distributed() else _env_int("RANK", 0)


def is_main() -> bool:
    """Whether this process is the one that writes files and reports progress (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA run started on several processes; ``device`` otherwise."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the other processes the launcher started, for the time of the block.

    Nothing happens in a single process, or when the caller has joined them already (then
    the caller also leaves them).
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if not dist.is_available():
        raise BadConfig(
            f"This torch build ({torch.__version__}) has no torch.distributed, so it cannot "
            "train on several processes. Run embedgen without torchrun."
        )
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise BadConfig(
            f"Training on several processes runs on CUDA GPUs or the CPU, not {device.type}. "
            "Pass --device cuda or --device cpu, or run without torchrun."
        )
    dist.init_process_group(backend)
    log.info("Process %d of %d joined (%s)", rank(), world_size(), backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when several processes train it; else itself.

    A trainable parameter may take no part in the loss (BERT's pooler: the loss reads the
    pooled token states, not the pooler). Every step uses the same parameters, so a static
    graph lets DDP learn which ones in the first step, instead of searching the graph for
    them in every step (``find_unused_parameters``).
    """
    if world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, static_graph=True)


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's contiguous part of ``items`` (all of them in a single process).

    The parts follow rank order and differ in length by at most one.
    """
    n, w, r = len(items), world_size(), rank()
    return items[r * n // w : (r + 1) * n // w] if w > 1 else items


def gather_rows(part: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` rows whose :func:`shard` each rank holds as ``part``, in order, on every rank."""
    w = world_size()
    if w == 1 or n == 0:
        return part
    sizes = [(r + 1) * n // w - r * n // w for r in range(w)]
    padded = part.new_zeros((max(sizes), *part.shape[1:]), device=_comm_device())
    padded[: len(part)] = part
    pieces = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(pieces, padded)
    return torch.cat([p[:s] for p, s in zip(pieces, sizes, strict=True)]).to(part.device)


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (``values`` itself in a single process)."""
    if world_size() == 1:
        return values
    total = values.to(_comm_device(), copy=True)
    dist.all_reduce(total)
    return total.to(values.device)


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable), on every rank; the others' ``obj`` is ignored."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank; the others pass one of the same shape and dtype."""
    if world_size() == 1:
        return tensor
    out = torch.empty_like(tensor)
    for start in range(0, len(tensor), BROADCAST_ROWS):
        block = tensor[start : start + BROADCAST_ROWS].to(_comm_device(), copy=True)
        dist.broadcast(block, src=0)
        out[start : start + len(block)] = block.to(out.device)
    return out


def _comm_device() -> torch.device:
    """Where the backend takes its tensors: the GPU of this rank for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
