"""Tokenised texts in batches, and the features an encoder gives them.

Shared by fine-tuning (sentence features for the head) and matrix building (batches of token
ids through the encoder).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from embedgen.train.config import Pooling

GPU_PAD_MULTIPLE = 16


class Batches:
    """Tokenised texts, padded per batch to the longest text, rounded up to ``multiple``.

    Padding to the batch's longest text keeps short batches cheap. On a GPU the width is
    rounded up to a multiple of 16 to keep the number of distinct shapes small: on an H100,
    PyTorch's cuDNN attention builds a plan for every new shape, and a first bf16 pass over
    4,096 texts of exact widths ran at 955 rows/s against 4,857 rows/s once those widths
    had plans (BENCHMARKS.md). On the CPU there are no plans, and rounding would only add work.
    """

    def __init__(
        self,
        tokenizer: Any,
        texts: Sequence[str],
        max_length: int,
        multiple: int = 1,
        *,
        offsets: bool = False,
    ) -> None:
        enc = tokenizer(
            list(texts),
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=offsets,
            return_special_tokens_mask=offsets,
        )
        self.ids: list[list[int]] = enc["input_ids"]
        # With ``offsets``: each token's characters in its text, and which tokens are special.
        self.offsets: list[list[tuple[int, int]]] | None = (
            enc["offset_mapping"] if offsets else None
        )
        self.special: list[list[int]] | None = enc["special_tokens_mask"] if offsets else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_length = max_length
        self.multiple = multiple

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, index: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        """The model inputs of the texts at ``index``, on ``device``."""
        rows = [self.ids[i] for i in index]
        longest = max(len(r) for r in rows)
        rounded = -(-longest // self.multiple) * self.multiple
        width = max(longest, min(rounded, self.max_length))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    def by_length(self) -> list[int]:
        """Text positions, shortest first (batches of similar length pad little)."""
        return sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))


def pad_multiple(device: torch.device) -> int:
    """What batch widths are rounded up to on ``device`` (see :class:`Batches`)."""
    return GPU_PAD_MULTIPLE if device.type == "cuda" else 1


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Sentence features from token states: mean over real tokens, or the first token."""
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def iter_batches(n: int, size: int) -> Iterator[range]:
    """Consecutive ranges of ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield range(start, min(n, start + size))
