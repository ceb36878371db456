"""``input`` and ``projected`` rows: the model's token-embedding table, as it is or through a
run's trained projection. A word's row is the mean of its pieces' rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from embedgen.errors import BadConfig
from embedgen.models import Encoder
from embedgen.train import Head
from embedgen.train.batches import iter_batches
from embedgen.words import word_pieces


def table_rows(encoder: Encoder, head: Head | None, ids: list[int]) -> np.ndarray:
    """Rows of the input-embedding table (``input``), through ``head``'s projection when given
    (``projected``)."""
    weight = encoder.model.get_input_embeddings().weight.detach()
    rows = weight[torch.tensor(ids, dtype=torch.long, device=weight.device)].float()
    if head is not None:
        at = next(head.parameters()).device
        with torch.no_grad():
            rows = torch.cat(
                [head.project(rows[r].to(at)).float().cpu() for r in iter_batches(len(ids), 4096)]
            )
    return rows.cpu().numpy().astype(np.float32, copy=False)


def word_rows(encoder: Encoder, words: Sequence[str], head: Head | None = None) -> np.ndarray:
    """``input`` (and with ``head``, ``projected``) word vectors: the mean of each word's
    sub-token rows of the input-embedding table, through the projection when given."""
    weight = encoder.model.get_input_embeddings().weight.detach().float().cpu()
    pieces = word_pieces(encoder.tokenizer, words)
    empty = [w for w, p in zip(words, pieces, strict=True) if not p]
    if empty:
        raise BadConfig(
            f"{len(empty)} words have no tokens in {encoder.info.model_id} (e.g. {empty[0]!r})."
        )
    rows = torch.stack([weight[p].mean(0) for p in pieces])
    if head is not None:
        at = next(head.parameters()).device
        with torch.no_grad():
            rows = head.project(rows.to(at)).float().cpu()
    return rows.numpy().astype(np.float32, copy=False)
