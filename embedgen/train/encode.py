"""Texts through an encoder to sentence features: the frozen encoder's pass, and validation.

The ``head`` strategy reads every distinct text of the data once through the frozen encoder
(:func:`frozen_features`): through the feature cache (``embedgen.features``, so a re-run with
other head settings skips it), optionally with an int8 copy of the encoder on the CPU, on
several processes under torchrun. :func:`encode_all` reads one set of tokenised texts,
shortest batches first, side by side on the CPU (``embedgen.lanes``); its batches halve on a
GPU out-of-memory error (:class:`~embedgen.train.halving.Halving`).

While the frozen pass has a batch's last-layer states in hand, a :class:`StatesHook` may look
at them (``embedgen.wordstates`` keeps word vectors there for later matrices). The pass knows
nothing of what the hook does with them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from embedgen.device import autocast
from embedgen.errors import Cancelled
from embedgen.features import FeatureCache, FeatureKey, cached_features, feature_key
from embedgen.lanes import cpu_lanes, run_in_lanes
from embedgen.models import Encoder
from embedgen.progress import ProgressFn, check_cancel, stage
from embedgen.quantize import int8_encoder
from embedgen.train import distributed
from embedgen.train.batches import Batches, pad_multiple, pool
from embedgen.train.config import FinetuneConfig, Pooling
from embedgen.train.halving import Halving, is_oom

# The least batch for the frozen encoder's no-grad pass, by device type (the training batch
# when larger). The CPU keeps the training batch.
ENCODE_BATCH = {"cuda": 256}

# What rank 0 sends the other processes when the user cancels the feature encoding.
_ENCODING_CANCELLED = "cancelled"


class Pooled(nn.Module):
    """An encoder and its pooling: texts' token ids in, sentence features out."""

    def __init__(
        self, model: nn.Module, pooling: Pooling, device: torch.device, hidden_size: int
    ) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.device = device
        self.hidden_size = hidden_size

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The texts' pooled features (float32)."""
        with autocast(self.device):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, self.pooling).float()

    def features_and_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled features (float32) and the last layer's token states (as the matrix
        methods read a layer: ``hidden_states[-1]``)."""
        with autocast(self.device):
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            )
        features = pool(out.last_hidden_state, attention_mask, self.pooling).float()
        return features, out.hidden_states[-1].float()


# -- what a hook sees ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A frozen pass about to start: what it reads and how."""

    encoder: Encoder  # the run's encoder (its tokenizer, its facts; the pass may read an int8 copy)
    texts: Sequence[str]  # the distinct texts read, in the data's order: positions refer here
    all_texts: Sequence[str]  # the data's texts in order, with repeats
    max_length: int
    key: FeatureKey  # the pass's feature-cache key
    cache: FeatureCache | None  # None: the cache is off for this run
    int8: bool  # read by an int8 copy (its states differ from the encoder's)
    processes: int  # under torchrun, more than one


@dataclass(frozen=True)
class BatchStates:
    """One batch of the frozen pass: its texts' positions in :attr:`Reading.texts`, their
    last-layer states (batch x width x hidden) and attention mask, and per text the token ids,
    each token's characters in the text and which tokens are special (cut at the max length)."""

    positions: Sequence[int]
    states: torch.Tensor
    mask: torch.Tensor
    ids: Sequence[Sequence[int]]
    offsets: Sequence[Sequence[tuple[int, int]]]
    special: Sequence[Sequence[int]]


class StatesHook(Protocol):
    """Looks at each batch's hidden states while the frozen encoder reads the texts."""

    def start(self, reading: Reading) -> bool:
        """Whether to see this pass's batches (False: the pass runs as if there were none)."""
        ...

    def take(self, batch: BatchStates) -> None:
        """One batch; may be called from several threads, and twice for one batch (a batch
        read again after an out-of-memory error)."""
        ...

    def finish(self) -> None:
        """The pass ended and its features are cached (not called when it failed or was
        cancelled)."""
        ...


# -- reading --------------------------------------------------------------------------------------


@torch.no_grad()
def encode_all(
    reader: Pooled,
    tok: Batches,
    batches: Halving,
    advance: Callable[[int], None],
    *,
    cancel: threading.Event | None = None,
    collect: Callable[[Sequence[int], torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Features of every text of ``tok`` in its order, shortest batches first; with
    ``collect``, each batch's positions in ``tok``, last-layer states and attention mask go
    to it too. Under torchrun each process encodes its share of the texts and gets the others'.
    """
    reader.model.eval()
    mine = distributed.shard(range(len(tok)))
    assert isinstance(mine, range)
    feats = torch.empty((len(mine), reader.hidden_size))

    def step(index: Sequence[int]) -> None:
        at = [i - mine.start for i in index]
        batch = tok.collate(index, reader.device)
        if collect is None:
            feats[at] = reader.features(**batch).cpu()
            return
        features, states = reader.features_and_states(**batch)
        feats[at] = features.cpu()
        collect(index, states, batch["attention_mask"])

    order = [i for i in tok.by_length() if i in mine]
    done = 0
    if reader.device.type == "cpu" and cpu_lanes() > 1 and distributed.world_size() == 1:

        def finished(index: Sequence[int]) -> None:  # batches side by side, a core each
            nonlocal done
            done += len(index)
            advance(len(index))

        size = batches.size
        try:
            run_in_lanes(
                (order[p : p + size] for p in range(0, len(order), size)),
                step,
                finished,
                cpu_lanes(),
                lambda: check_cancel(cancel, "Fine-tuning"),
            )
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            batches.halve(exc)  # the rest one batch at a time
    # What is left: everything without lanes, the rest after an out-of-memory, else none.
    batches.run(order[done:], step, advance)
    if len(mine) == len(tok):
        return feats
    feats = distributed.gather_rows(feats, len(tok))
    advance(len(tok) - len(mine))
    return feats


def frozen_features(
    encoder: Encoder,
    texts: Sequence[str],
    all_texts: Sequence[str],
    config: FinetuneConfig,
    device: torch.device,
    batches: Halving,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    hook: StatesHook | None = None,
) -> torch.Tensor:
    """The features of every text of ``texts`` (distinct, in order) from the frozen encoder,
    through the feature cache; read by an int8 copy with ``config.int8``. ``hook`` sees the
    batches when its ``start`` says so."""
    assert config.max_length is not None  # finetune sets it from the data
    stage(progress, f"encoding {len(texts):,} texts", "texts")
    reader = int8_encoder(encoder) if config.int8 else encoder
    key = feature_key(
        reader, texts, max_length=config.max_length, pooling=config.pooling, device=device
    )
    cache = FeatureCache() if config.cache_features else None
    reading = Reading(
        encoder=encoder,
        texts=texts,
        all_texts=all_texts,
        max_length=config.max_length,
        key=key,
        cache=cache,
        int8=config.int8,
        processes=distributed.world_size(),
    )
    wanted = hook if hook is not None and hook.start(reading) else None
    pooled = Pooled(reader.model, config.pooling, device, encoder.info.hidden_size)
    frozen = _FrozenPass(pooled, reading, batches, progress, cancel, wanted)
    feats = frozen.features()
    if wanted is not None:
        wanted.finish()
    return feats


class _FrozenPass:
    """One frozen pass over a :class:`Reading`, chunk by chunk through the feature cache."""

    def __init__(
        self,
        reader: Pooled,
        reading: Reading,
        batches: Halving,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        hook: StatesHook | None,
    ) -> None:
        self.reader = reader
        self.reading = reading
        self.batches = batches
        self.progress = progress
        self.cancel = cancel
        self.hook = hook
        self.multiple = pad_multiple(reader.device)

    def features(self) -> torch.Tensor:
        """Every text's features, through the feature cache.

        Under torchrun rank 0 alone reads and writes the cache: it names each chunk the cache
        lacks, every process encodes its share of that chunk (:func:`encode_all`), and at the
        end rank 0 sends all the features to the others. A cancel is rank 0's to make.
        """
        key, cache = self.reading.key, self.reading.cache
        hidden = self.reading.encoder.info.hidden_size
        if distributed.world_size() == 1:
            return cached_features(
                key, hidden, self.encode, cache=cache, progress=self.progress, cancel=self.cancel
            )
        if distributed.is_main():

            def encode(positions: Sequence[int], advance: Callable[[int], None]) -> torch.Tensor:
                distributed.from_main(positions)
                return self.encode(positions, advance)

            try:
                feats = cached_features(
                    key, hidden, encode, cache=cache, progress=self.progress, cancel=self.cancel
                )
            except Cancelled:
                distributed.from_main(_ENCODING_CANCELLED)
                raise
            distributed.from_main(None)
        else:
            while (positions := distributed.from_main(None)) is not None:
                if positions == _ENCODING_CANCELLED:
                    raise Cancelled("Encoding was cancelled.")
                self.encode(positions, lambda _n: None)
            feats = torch.empty((key.n_texts, hidden))
        return distributed.broadcast_rows(feats)

    def encode(self, positions: Sequence[int], advance: Callable[[int], None]) -> torch.Tensor:
        """Features of the texts at ``positions`` (one feature-cache chunk); their states go
        to the hook when there is one."""
        tokenizer, max_length = self.reading.encoder.tokenizer, self.reading.max_length
        texts = [self.reading.texts[i] for i in positions]
        hook = self.hook
        if hook is None:
            tok = Batches(tokenizer, texts, max_length, self.multiple)
            return encode_all(self.reader, tok, self.batches, advance, cancel=self.cancel)
        tok = Batches(tokenizer, texts, max_length, self.multiple, offsets=True)
        assert tok.offsets is not None and tok.special is not None
        offsets, special = tok.offsets, tok.special

        def collect(index: Sequence[int], states: torch.Tensor, mask: torch.Tensor) -> None:
            hook.take(
                BatchStates(
                    positions=[positions[i] for i in index],
                    states=states,
                    mask=mask,
                    ids=[tok.ids[i] for i in index],
                    offsets=[offsets[i] for i in index],
                    special=[special[i] for i in index],
                )
            )

        return encode_all(
            self.reader, tok, self.batches, advance, cancel=self.cancel, collect=collect
        )
