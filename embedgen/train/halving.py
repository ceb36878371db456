"""Steps over a list in batches whose size halves when a GPU runs out of memory.

A training run and the frozen encoder's pass each keep one :class:`Halving` (its ``size`` is
the batch size in use), so an out-of-memory error costs one batch's work and the run goes on
at half the batch instead of ending. Progress counts rows, so it stays right when the size
changes part-way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import torch

from embedgen.errors import BadConfig
from embedgen.progress import check_cancel
from embedgen.train import distributed

log = logging.getLogger(__name__)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory(device: torch.device) -> None:
    """Give the device's cached memory back (a GPU's; nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Halving:
    """Batches of ``size`` rows, halved on a GPU out-of-memory error.

    ``name`` is what the size is called in messages ("batch size"). ``shared``: the batch is
    that of every process under torchrun together, so one process cannot halve it alone: an
    out-of-memory error ends the run with what to do instead.
    """

    def __init__(
        self,
        size: int,
        device: torch.device,
        *,
        name: str = "batch size",
        shared: bool = False,
        cancel: threading.Event | None = None,
    ) -> None:
        self.size = size
        self.device = device
        self.name = name
        self.shared = shared
        self.cancel = cancel

    def run(
        self,
        order: Sequence[int],
        step: Callable[[Sequence[int]], None],
        advance: Callable[[int], None],
    ) -> None:
        """``step`` over ``order`` in batches of :attr:`size`; ``advance(n)`` after each batch
        of n. A cancel is checked before each batch in a single process; under torchrun the
        processes must stop at the same batch, so the caller agrees on it with the others."""
        pos = 0
        while pos < len(order):
            if distributed.world_size() == 1:
                check_cancel(self.cancel, "Fine-tuning")
            index = order[pos : pos + self.size]
            try:
                step(index)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_oom(exc):
                    raise
                self.halve(exc)
                continue
            pos += len(index)
            advance(len(index))

    def halve(self, exc: BaseException) -> None:
        """Halve the size after ``exc`` (an out-of-memory error), or say why it cannot be."""
        free_memory(self.device)
        if self.shared and distributed.world_size() > 1:
            world = distributed.world_size()
            raise BadConfig(
                f"Out of GPU memory in process {distributed.rank()} of {world} at a batch of "
                f"{self.size} rows ({-(-self.size // world)} per process). Training "
                "on several processes cannot lower the batch part-way: start again with a "
                "smaller --batch-size (it counts the rows of all processes together), or "
                "a lower --max-length."
            ) from exc
        if self.size == 1:
            raise BadConfig(
                "Out of GPU memory even with batch size 1. Lower --max-length, choose "
                "strategy 'head' or a smaller model, or use --device cpu."
            ) from exc
        self.size = max(1, self.size // 2)
        log.warning("Out of memory: %s halved to %d", self.name, self.size)
