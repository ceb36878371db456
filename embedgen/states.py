"""Reading an encoder's hidden states: the one pass every contextual vector goes through.

:func:`read_states` runs batches through the encoder, takes the hidden states at a layer (or
the mean of a layer range), lets the caller pick rows of them (a token's position, the mean of
a word's pieces), passes those through a head's projection when given and hands them back in
order. On a CPU the batches are read side by side (``embedgen.lanes``); the encoder and head
are on the device and in eval mode for the pass, then back where they were. Token rows,
whole-word rows and words read in context (``embedgen.matrix``, ``embedgen.words``) are each
a few lines around it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import nn

from embedgen.device import autocast
from embedgen.lanes import cpu_lanes, run_in_lanes
from embedgen.models import Encoder
from embedgen.progress import ProgressFn, check_cancel
from embedgen.train.head import Head

B = TypeVar("B")  # a batch, as the caller describes it
T = TypeVar("T")  # where a batch's vectors go, as the caller describes it


@dataclass(frozen=True)
class Inputs(Generic[B]):
    """One batch made ready for the encoder: ``batch`` as the caller gave it, its token ids
    and attention mask, and anything else the caller's ``pick`` needs (offsets...)."""

    batch: B
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    extra: dict[str, torch.Tensor] | None = None


def layer_mean(hidden_states: Sequence[torch.Tensor], layers: tuple[int, int]) -> torch.Tensor:
    """The mean of hidden states ``layers[0]`` to ``layers[1]`` (0 = embedding output)."""
    first, last = layers
    if first == last:
        return hidden_states[first].float()
    return torch.stack([hidden_states[i].float() for i in range(first, last + 1)]).mean(0)


def span_mean(states: torch.Tensor, spans: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
    """For each (batch row, positions), the mean of ``states[row, positions]``."""
    return torch.stack([states[row, list(pos)].mean(0) for row, pos in spans])


def out_dims(encoder: Encoder, head: Head | None) -> int:
    """How many numbers a vector read by ``encoder`` has (after ``head``'s projection)."""
    return head.projection.out_features if head is not None else encoder.info.hidden_size


def read_states(
    encoder: Encoder,
    batches: Sequence[B],
    layers: tuple[int, int],
    *,
    inputs: Callable[[B], Inputs[B]],
    pick: Callable[[Inputs[B], torch.Tensor], tuple[T, torch.Tensor] | None],
    take: Callable[[T, np.ndarray], None],
    device: torch.device,
    head: Head | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    what: str = "Reading",
    sizes: Sequence[int] | None = None,
) -> None:
    """Read every batch through ``encoder`` at ``layers``; for each, ``take(target, vectors)``.

    ``inputs(batch)`` makes a batch's encoder inputs, in the calling thread (a fast tokenizer
    cannot be used by two threads at once). ``pick(inputs, states)`` gets the batch's states at
    ``layers`` (batch x width x hidden, float32) and returns where its vectors go and the
    vectors (rows x hidden), or None when the batch gives none; it runs in a lane. The vectors
    pass through ``head``'s projection when given and reach ``take`` as float32 numpy, in the
    calling thread and in the order of ``batches``. ``progress`` counts batches, or with
    ``sizes`` (one a batch: its characters, say) their sizes, so that batches of growing
    length do not make the start look fast; ``cancel`` is checked before each one (``what``
    names the work in the message).
    """
    # Long: two closures that share the results between a lane (read) and the calling thread
    # (done, in order), and the block that runs them on the device.
    results: dict[int, tuple[T, np.ndarray]] = {}

    def read(ready: Inputs[B]) -> None:
        with autocast(device):
            hidden = encoder.model(
                input_ids=ready.input_ids.to(device),
                attention_mask=ready.attention_mask.to(device),
                output_hidden_states=True,
            ).hidden_states
        picked = pick(ready, layer_mean(hidden, layers))
        if picked is not None:
            target, vectors = picked
            if head is not None:
                vectors = head.project(vectors)
            results[id(ready)] = (target, vectors.float().cpu().numpy())

    weights = list(sizes) if sizes is not None else [1] * len(batches)
    total, finished = sum(weights), iter(itertools.accumulate(weights))

    def done(ready: Inputs[B]) -> None:  # in order, in the calling thread
        if id(ready) in results:
            take(*results.pop(id(ready)))
        if progress is not None:
            progress(next(finished), total)

    lanes = cpu_lanes() if device.type == "cpu" else 1
    with on_device([encoder.model, head], device), evaluating(encoder.model):
        run_in_lanes(
            (inputs(b) for b in batches),
            read,
            done,
            lanes,
            lambda: check_cancel(cancel, what),
        )


@contextlib.contextmanager
def on_device(modules: Sequence[nn.Module | None], device: torch.device) -> Iterator[None]:
    """Move ``modules`` to ``device`` for the block, then back to where they were."""
    present = [m for m in modules if m is not None]
    homes = [next(m.parameters()).device for m in present]
    try:
        for m in present:
            m.to(device)
        yield
    finally:
        for m, home in zip(present, homes, strict=True):
            m.to(home)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block (no dropout), then back to its own mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
