"""A word read in its contexts (sentences of the corpus, or generated ones): the mean of the
states of the tokens that overlap the word's characters, over its contexts."""

from __future__ import annotations

import threading

import numpy as np
import torch

from embedgen.models import Encoder
from embedgen.progress import ProgressFn
from embedgen.states import Inputs, out_dims, read_states, span_mean
from embedgen.train import Head
from embedgen.words import LONE_MARKER, Context, word_spans


def context_vectors(
    encoder: Encoder,
    contexts: list[Context],
    rows: int,
    layers: tuple[int, int],
    *,
    device: torch.device,
    head: Head | None = None,
    max_tokens: int = 128,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean vector of each row over its contexts, and how many contexts each averages.

    Each distinct text is encoded once, truncated to ``max_tokens``; a context's vector is the
    mean of the states at ``layers`` of the tokens that overlap its word's characters (lone
    ``▁`` left out), through the projection when ``head`` is given; a context whose word was
    cut off by truncation is skipped. Rows without a context hold NaN.
    """
    # Long: its three steps (inputs, pick, take) are closures over the contexts grouped by
    # text and the running sums; apart, each would need all of them passed in.
    by_text: dict[str, list[Context]] = {}
    for c in contexts:
        by_text.setdefault(c.text, []).append(c)
    dims = out_dims(encoder, head)
    sums = np.zeros((rows, dims), dtype=np.float64)
    used = np.zeros(rows, dtype=np.int64)
    tokenizer = encoder.tokenizer
    lone = tokenizer.get_vocab().get(LONE_MARKER)
    order = sorted(by_text, key=len)

    def inputs(chunk: list[str]) -> Inputs[list[str]]:
        enc = tokenizer(
            chunk,
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        extra = {k: enc[k] for k in ("offset_mapping", "special_tokens_mask")}
        return Inputs(chunk, enc["input_ids"], enc["attention_mask"], extra)

    def pick(
        ready: Inputs[list[str]], states: torch.Tensor
    ) -> tuple[list[int], torch.Tensor] | None:
        assert ready.extra is not None
        spans, targets = [], []
        for j, text in enumerate(ready.batch):
            ids = ready.input_ids[j].tolist()
            offsets = ready.extra["offset_mapping"][j].tolist()
            special = ready.extra["special_tokens_mask"][j].tolist()
            for c, pos in word_spans(ids, offsets, special, by_text[text], lone):
                spans.append((j, pos))
                targets.append(c.row)
        return (targets, span_mean(states, spans)) if spans else None

    def take(targets: list[int], vectors: np.ndarray) -> None:
        np.add.at(sums, targets, vectors.astype(np.float64))
        np.add.at(used, targets, 1)

    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    cut = 3 * max_tokens  # about the characters a context's tokens reach
    sizes = [sum(min(len(text), cut) for text in batch) for batch in batches]
    read_states(
        encoder,
        batches,
        layers,
        inputs=inputs,
        pick=pick,
        take=take,
        device=device,
        head=head,
        progress=progress,
        cancel=cancel,
        what="Word vectors",
        sizes=sizes,
    )
    out = np.full((rows, dims), np.nan, dtype=np.float32)
    seen = used > 0
    out[seen] = (sums[seen] / used[seen, None]).astype(np.float32)
    return out, used
