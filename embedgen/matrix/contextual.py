"""``contextual`` rows: each token, or each word, alone through the encoder.

A token is read in its special-token frame (``[CLS] x [SEP]``), a word as its pieces in the
same frame, their states averaged; at one layer or the mean of a layer range; from a run,
through its projection unless switched off.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from embedgen.models import Encoder
from embedgen.progress import ProgressFn
from embedgen.states import Inputs, out_dims, read_states, span_mean
from embedgen.tokens import special_frame
from embedgen.train import Head
from embedgen.train.batches import iter_batches
from embedgen.words import word_pieces


def token_rows(
    encoder: Encoder,
    ids: list[int],
    layers: tuple[int, int],
    *,
    device: torch.device,
    head: Head | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """Each token alone in its special-token frame ([CLS] x [SEP]) through the encoder, read at
    ``layers`` (the mean of a range), through ``head``'s projection when given; batches of
    ``batch_size``."""
    frame, pos = special_frame(encoder.tokenizer)
    out = np.empty((len(ids), out_dims(encoder, head)), dtype=np.float32)

    def inputs(rng: range) -> Inputs[range]:
        chunk = torch.tensor([ids[i] for i in rng], dtype=torch.long)
        seq = torch.tensor(frame, dtype=torch.long).repeat(len(chunk), 1)
        seq = torch.cat([seq[:, :pos], chunk[:, None], seq[:, pos:]], dim=1)
        return Inputs(rng, seq, torch.ones_like(seq))

    def take(rng: range, vectors: np.ndarray) -> None:
        out[rng.start : rng.stop] = vectors

    read_states(
        encoder,
        list(iter_batches(len(ids), batch_size)),
        layers,
        inputs=inputs,
        pick=lambda ready, states: (ready.batch, states[:, pos]),
        take=take,
        device=device,
        head=head,
        progress=progress,
        cancel=cancel,
        what="Matrix building",
    )
    return out


def whole_word_vectors(
    encoder: Encoder,
    words: Sequence[str],
    layers: tuple[int, int],
    *,
    device: torch.device,
    head: Head | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """``contextual`` word vectors: each word alone in its special-token frame through the
    encoder, its pieces' states averaged at ``layers`` (a range is averaged over its layers),
    through the projection when ``head`` is given."""
    tokenizer = encoder.tokenizer
    pieces = word_pieces(tokenizer, words)
    frame, lead = special_frame(tokenizer)
    order = sorted(range(len(words)), key=lambda i: len(pieces[i]))
    out = np.empty((len(words), out_dims(encoder, head)), dtype=np.float32)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def inputs(index: list[int]) -> Inputs[list[int]]:
        seqs = [frame[:lead] + pieces[i] + frame[lead:] for i in index]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        return Inputs(index, ids, mask)

    def pick(ready: Inputs[list[int]], states: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        spans = [(j, range(lead, lead + len(pieces[i]))) for j, i in enumerate(ready.batch)]
        return ready.batch, span_mean(states, spans)

    def take(index: list[int], vectors: np.ndarray) -> None:
        out[index] = vectors

    read_states(
        encoder,
        [order[s : s + batch_size] for s in range(0, len(order), batch_size)],
        layers,
        inputs=inputs,
        pick=pick,
        take=take,
        device=device,
        head=head,
        progress=progress,
        cancel=cancel,
        what="Word vectors",
    )
    return out
