"""Fine-tune a projection head (and, by strategy, encoder layers) on labelled text.

Sentence features are the encoder's last hidden states averaged over real tokens, so the
projection learns in the space the contextual token vectors live in. Read top to bottom:
:func:`finetune` splits the data and hands it to a ``_Trainer``, which plans the optimizer,
encodes the texts once when the encoder is frozen (through the feature cache,
``embedgen.features``, so a re-run with other head settings skips it), runs epochs until the
last one or an early stop, and restores the best epoch.

Progress goes by stage (``embedgen.progress.stage``): "encoding N texts" (counting texts) for
the frozen encoder or "tokenizing N texts" for the others, then "epoch k of n" (counting the
rows of that epoch). Progress and the learning-rate schedule count rows, not batches, so both
stay right when a GPU out-of-memory error halves the batch part-way.

Under torchrun (``embedgen.train.distributed``) the same loop runs in every process. With the
encoder training, the model and head train in DistributedDataParallel: every process draws the
same seeded order, takes its share of each batch (``batch_size`` is the batch of all processes
together, so a run on N GPUs takes the steps of a run on one) and validates on all the
validation texts, each process encoding its share. With the encoder frozen, each process
encodes its share of the texts, rank 0 alone reads and writes the feature cache, and every
process trains the same small head on all the features. Metrics, early stopping and cancel
are the same in every process; rank 0 writes (``embedgen.runs``).

A training loss that is not finite stops the run with :class:`BadConfig` naming the epoch and
batch. Losses stay on the device and are read every ``SYNC_EVERY`` batches (each batch on the
CPU), so a GPU is not made to wait for the host after every step.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from embedgen.data import LabelledData, split
from embedgen.device import autocast, autocast_dtype, resolve_device
from embedgen.errors import BadConfig, Cancelled
from embedgen.features import FeatureCache, FeatureKey, cached_features, feature_key
from embedgen.lanes import cpu_lanes, one_torch_thread, run_in_lanes
from embedgen.models import Encoder
from embedgen.progress import ProgressFn, check_cancel, stage
from embedgen.quantize import int8_encoder
from embedgen.tokens import max_positions, text_lengths
from embedgen.train import distributed
from embedgen.train.batches import Batches, pad_multiple, pool
from embedgen.train.config import FinetuneConfig, Pooling, Strategy
from embedgen.train.head import Head
from embedgen.train.metrics import confusion_matrix, macro_f1

if TYPE_CHECKING:
    from embedgen.wordstates import Collector

log = logging.getLogger(__name__)

# The least batch for the frozen encoder's no-grad pass, by device type (the training batch
# when larger). The CPU keeps the training batch.
ENCODE_BATCH = {"cuda": 256}

# Training batches between two reads of their losses, by device type (each batch elsewhere).
# A read waits for the device and, under torchrun, is one small all-reduce that also carries
# every process's cancel.
SYNC_EVERY = {"cuda": 50}

# What rank 0 sends the other processes when the user cancels the feature encoding.
_ENCODING_CANCELLED = "cancelled"


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    head_learning_rate: float = 0.0  # the head's learning rate when the epoch ended


@dataclass
class Run:
    """The outcome of fine-tuning: trained head, (possibly tuned) encoder and what happened."""

    config: FinetuneConfig
    head: Head
    encoder: Encoder
    encoder_changed: bool
    label_names: tuple[str, ...]
    history: list[EpochMetrics] = field(default_factory=list)
    cancelled: bool = False  # stopped by its user (its best finished epoch is kept)
    best_epoch: int = 0
    confusion: list[list[int]] = field(default_factory=list)
    data_summary: dict[str, Any] = field(default_factory=dict)
    batch_size_used: int = 0
    message: str = ""
    folder: str | None = None

    @property
    def best(self) -> EpochMetrics | None:
        return next((m for m in self.history if m.epoch == self.best_epoch), None)


def finetune(
    encoder: Encoder,
    data: LabelledData,
    config: FinetuneConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> Run:
    """Train a head (and, by strategy, encoder layers) on ``data``; return the :class:`Run`.

    The encoder passed in is never changed: strategies that tune it work on a copy.
    ``progress`` gets (done, total) within each stage ("encoding N texts" in texts, or
    "tokenizing N texts"; then "epoch k of n" in rows); ``cancel`` is checked before every
    batch; ``on_epoch`` gets each epoch's metrics as soon as they are known.

    Launched by torchrun on several processes, each process calls this with the same
    arguments and gets the same :class:`Run` (the module docstring says how the work is
    shared); the caller writes from rank 0 only (``distributed.is_main()``).
    """
    config = config or FinetuneConfig()
    if config.max_length is None:
        lengths = text_lengths(encoder.tokenizer, data.texts, limit=max_positions(encoder))
        config = replace(config, max_length=lengths.suggested)
        log.info("Max length %d tokens from the data: %s", lengths.suggested, lengths.describe())
    train, val = split(data, val_fraction=config.val_fraction, seed=config.seed)
    log.info("Fine-tuning on %d rows, validating on %d", len(train), len(val))
    with distributed.process_group(resolve_device(config.device)):
        trainer = _Trainer(encoder, train, val, config, progress, cancel, on_epoch, data.texts)
        try:
            run = trainer.run()
        finally:
            trainer.release()
    summary = data.summary()
    summary.update({"rows_train": len(train), "rows_validation": len(val)})
    return replace(run, label_names=tuple(data.label_names), data_summary=summary)


# -- what trains ------------------------------------------------------------------------------


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (the longest ModuleList matching the layer count)."""
    n = getattr(model.config, "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matching = [m for m in candidates if n is None or len(m) == n]
    if not matching:
        raise BadConfig(
            f"Cannot find the transformer layers of {type(model).__name__}; use strategy 'head' "
            "or 'full' for this model."
        )
    return max(matching, key=len)


def set_trainable(model: nn.Module, config: FinetuneConfig) -> int:
    """Freeze what the strategy keeps fixed; return the number of trainable encoder parameters."""
    for p in model.parameters():
        p.requires_grad = False
    if config.strategy is Strategy.TOP_K:
        layers = transformer_layers(model)
        if config.top_k > len(layers):
            raise BadConfig(
                f"top-k asks for {config.top_k} layers but the model has {len(layers)}. "
                f"Choose 1..{len(layers)}, or strategy 'full'."
            )
        for layer in layers[-config.top_k :]:
            for p in layer.parameters():
                p.requires_grad = True
    elif config.strategy is Strategy.FULL:
        for p in model.parameters():
            p.requires_grad = True
        if not config.train_embeddings:
            for p in model.get_input_embeddings().parameters():
                p.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cast_frozen_linears(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Store the weights of ``model``'s frozen ``nn.Linear`` layers in ``dtype`` once; return
    their names (to put the originals back with :func:`restore_frozen_linears`).

    Under autocast a linear layer's weight is cast to bf16 at every call, and the cast is
    cached only for weights that train: a frozen layer paid one cast per step (issue 10's
    launch-bound ``top-k``). Cast once, the layer computes the same numbers: autocast would
    have cast the same weights to the same dtype.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.to(dtype)
            names.append(name)
    return names


def restore_frozen_linears(model: nn.Module, original: nn.Module, names: Sequence[str]) -> None:
    """Put back the frozen linear layers ``names`` of ``model`` as ``original`` holds them, in
    its dtype (a run saves its encoder at full precision)."""
    for name in names:
        module, source = model.get_submodule(name), original.get_submodule(name)
        module.to(next(source.parameters()).dtype)
        module.load_state_dict(source.state_dict())


def lr_factor(seen: int, batch: int, total: int, warmup: int) -> float:
    """The learning-rate multiplier for the batch after ``seen`` of ``total`` training rows.

    Linear warm-up over the first ``warmup`` rows (its first batch gets batch/warmup of the
    rate), then linear decay to zero at ``total``. Counting rows rather than optimizer steps
    keeps the schedule the same length when the batch size changes mid-run.
    """
    ramp = min(1.0, (seen + batch) / warmup) if warmup > 0 else 1.0
    decay = max(0.0, (total - seen) / max(1, total - warmup)) if seen >= warmup else 1.0
    return min(ramp, decay)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _diverged(where: str, strategy: Strategy) -> BadConfig:
    flags = "--head-lr" if strategy is Strategy.HEAD else "--head-lr / --lr"
    return BadConfig(
        f"Training diverged {where}. Lower the learning rate ({flags}) and start again."
    )


class _Classifier(nn.Module):
    """The encoder, pooling and head as one module. Under torchrun DistributedDataParallel
    wraps it, so the gradients of the encoder's layers and of the head sync together."""

    def __init__(self, model: nn.Module, head: Head, pooling: Pooling, device: torch.device):
        super().__init__()
        self.model = model
        self.head = head
        self.pooling = pooling
        self.device = device

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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask)).float()


@dataclass
class _Losses:
    """One epoch's training losses, a batch at a time.

    A batch's loss waits on the device (summed over this process's rows) until it is read
    with the others in ``pending``; ``read`` holds (mean loss, rows) of the batches read.
    """

    pending: list[torch.Tensor] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # each pending batch's rows, all processes
    read: list[tuple[float, int]] = field(default_factory=list)

    def mean(self) -> float:
        return sum(v * n for v, n in self.read) / max(1, sum(n for _, n in self.read))


@dataclass
class _Best:
    """The best epoch so far: its macro-F1, predictions and a copy of what trained."""

    f1: float = -1.0
    epoch: int = 0
    pred: np.ndarray | None = None
    state: dict[str, dict[str, torch.Tensor]] | None = None


class _Trainer:
    """One fine-tuning run; holds the mutable state the loop needs."""

    def __init__(
        self,
        encoder: Encoder,
        train: LabelledData,
        val: LabelledData,
        config: FinetuneConfig,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        on_epoch: Callable[[EpochMetrics], None] | None,
        texts: Sequence[str],
    ) -> None:
        self.config = config
        self.device = distributed.local_device(resolve_device(config.device))
        self.progress = progress
        self.cancel = cancel
        self.on_epoch = on_epoch
        self.batch_size = config.batch_size
        # Encoding needs no gradients, so on a GPU it takes bigger batches than training: at
        # the training batch (32) a bert-base pass is launch-bound (BENCHMARKS.md, "GPU").
        self.encode_batch_size = max(config.batch_size, ENCODE_BATCH.get(self.device.type, 0))
        self.num_classes = len(train.label_names)
        self.tuned = config.strategy is not Strategy.HEAD
        # Where the caller keeps the encoder; the run's modules go back there when it ends.
        self.home = next(encoder.model.parameters()).device
        model = copy.deepcopy(encoder.model) if self.tuned else encoder.model
        self.model = model.to(self.device)
        self.encoder = Encoder(model=self.model, tokenizer=encoder.tokenizer, info=encoder.info)
        trainable = set_trainable(self.model, config) if self.tuned else 0
        log.info("Strategy %s: %d trainable encoder parameters", config.strategy, trainable)
        # The tuned strategies' frozen linear layers in bf16 once (they go back at the end).
        self.original = encoder.model
        dtype = autocast_dtype(self.device)
        self.cast_frozen = (
            cast_frozen_linears(self.model, dtype) if self.tuned and dtype is not None else []
        )
        if self.cast_frozen:
            log.info("%d frozen linear layers kept in %s", len(self.cast_frozen), dtype)
        torch.manual_seed(config.seed)
        hidden = encoder.info.hidden_size
        self.head = Head(hidden, config.dim, self.num_classes, config.dropout).to(self.device)
        self.classifier = _Classifier(self.model, self.head, config.pooling, self.device)
        self.reader = self.classifier  # what encodes texts (an int8 copy's, for head --int8)
        self.collector: Collector | None = None  # keeps word states during the head pass
        self.all_texts = texts
        # What the tuned strategies step through: in DistributedDataParallel under torchrun.
        self.net = distributed.wrap(self.classifier, self.device) if self.tuned else None
        self.sync_every = SYNC_EVERY.get(self.device.type, 1)
        self.train_y = torch.tensor(train.labels, dtype=torch.long)
        self.val_y = torch.tensor(val.labels, dtype=torch.long)
        self.multiple = pad_multiple(self.device)
        self.train_texts, self.val_texts = train.texts, val.texts
        # Every distinct text of the data once, in the data's order: the frozen encoder's
        # features are cached for these, so another seed or split finds them too.
        self.texts = list(dict.fromkeys(texts))
        self.train_tok: Batches | None = None  # tokenised when the encoder trains
        self.val_tok: Batches | None = None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.advance: Callable[[int], None] | None = None  # counts the current stage's units
        self.trained_rows = 0  # rows the optimizer has stepped over; drives the LR schedule

    # -- the run, top to bottom ----------------------------------------------------------------
    def run(self) -> Run:
        cfg = self.config
        optimizer, scheduler = self._optimizer()
        history: list[EpochMetrics] = []
        best = _Best()
        cancelled, message = False, ""
        try:
            train_feats, val_feats = self._prepare()
            with self._epoch_threads():
                for epoch in range(1, cfg.epochs + 1):
                    metrics, pred = self._epoch(epoch, optimizer, scheduler, train_feats, val_feats)
                    history.append(metrics)
                    if self.on_epoch is not None:
                        self.on_epoch(metrics)
                    if metrics.val_macro_f1 > best.f1:
                        best = _Best(metrics.val_macro_f1, epoch, pred, self._snapshot())
                    elif (
                        cfg.patience
                        and epoch - best.epoch >= cfg.patience
                        and epoch < cfg.epochs  # the last epoch ends the run anyway
                    ):
                        message = (
                            f"Stopped early after epoch {epoch}: "
                            f"no better macro-F1 since {best.epoch}."
                        )
                        log.info(message)
                        break
        except Cancelled:
            cancelled = True
            message = f"Cancelled after {len(history)} of {cfg.epochs} epochs."
            if not history:
                message = "Cancelled before the first epoch finished; no head was trained."
                if not self.tuned and cfg.cache_features:
                    message += (
                        " The texts encoded so far are cached: the next run on this model, "
                        "data and max length starts from there."
                    )
            log.info(message)
        finally:
            restore_frozen_linears(self.model, self.original, self.cast_frozen)
            self.cast_frozen = []
        return self._result(history, best, cancelled, message)

    def _optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """AdamW over the head (and what trains of the encoder), with a schedule over rows."""
        cfg = self.config
        params = [{"params": self.head.parameters(), "lr": cfg.head_learning_rate}]
        enc_params = [p for p in self.model.parameters() if p.requires_grad]
        if enc_params:
            params.append({"params": enc_params, "lr": cfg.learning_rate})
        optimizer = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
        rows_total = max(1, cfg.epochs * len(self.train_y))
        warmup_rows = rows_total // 10 if self.tuned else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda _step: lr_factor(self.trained_rows, self.batch_size, rows_total, warmup_rows),
        )
        return optimizer, scheduler

    def _prepare(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """With the encoder frozen, every text's features once (from the feature cache where
        it has them); otherwise tokenise the texts for the epochs and return (None, None)."""
        cfg = self.config
        if self.tuned:
            n = len(self.train_texts) + len(self.val_texts)
            self._begin(f"tokenizing {n:,} texts", "texts", n)
            self.train_tok = self._tokenize(self.train_texts)
            self.val_tok = self._tokenize(self.val_texts)
            self._advance(n)
            return None, None
        stage(self.progress, f"encoding {len(self.texts):,} texts", "texts")
        # The texts may be read by an int8 copy (CPU); the run keeps the fp32 encoder.
        reader = int8_encoder(self.encoder) if cfg.int8 else self.encoder
        key = feature_key(
            reader,
            self.texts,
            max_length=cfg.max_length,
            pooling=cfg.pooling,
            device=self.device,
        )
        self.reader = _Classifier(reader.model, self.head, cfg.pooling, self.device)
        cache = FeatureCache() if cfg.cache_features else None
        self.collector = self._word_collector(key, cache)
        try:
            feats = self._frozen_features(key, cache)
            self._keep_word_states(key, cache)
        finally:
            self.reader = self.classifier
            self.collector = None
        position = {text: i for i, text in enumerate(self.texts)}
        train_at = [position[t] for t in self.train_texts]
        val_at = [position[t] for t in self.val_texts]
        return feats[train_at], feats[val_at]

    def _word_collector(self, key: FeatureKey, cache: FeatureCache | None) -> Collector | None:
        """A collector of word states for this pass, when they can be kept: strategy head in
        one process, fp32 or bf16 (an int8 copy's states would not match an aggregated
        matrix's), a fast tokenizer (offsets), and a feature cache entry with nothing in it
        yet (a pass that finds chunks cached reads only the rest)."""
        from embedgen.wordstates import Collector  # embedgen.words imports this package

        cfg = self.config
        if (
            not cfg.word_states
            or cache is None
            or cache.budget <= 0
            or cfg.int8
            or distributed.world_size() > 1
            or not getattr(self.encoder.tokenizer, "is_fast", False)
            or cache.has_chunks(key)
        ):
            return None
        assert cfg.max_length is not None
        started = time.perf_counter()
        collector = Collector(
            self.encoder.tokenizer,
            self.all_texts,
            self.texts,
            cfg.max_length,
            self.encoder.info.hidden_size,
        )
        log.info(
            "Word states: %d words of the data segmented in %.1f s",
            len(collector.words),
            time.perf_counter() - started,
        )
        return collector

    def _keep_word_states(self, key: FeatureKey, cache: FeatureCache | None) -> None:
        """Write the collected word states into the feature cache entry, beside its chunks."""
        from embedgen.wordstates import states_file

        if self.collector is None or cache is None:
            return
        states = self.collector.result()
        folder = cache.folder(key)
        if states is None or not cache.has_chunks(key, every=True):
            log.info("Word states not kept: not every text was read and cached in this pass")
            return
        if cache.room_for(states.sums.nbytes, folder):
            states.save(states_file(folder, self.collector.corpus))
            log.info(
                "Word states kept: %d words, %d occurrences read, %d texts cut at %d tokens",
                len(states.words),
                int(states.counts.sum()),
                int(states.cut.sum()),
                states.max_length,
            )

    def _frozen_features(self, key: FeatureKey, cache: FeatureCache | None) -> torch.Tensor:
        """Every text's features from the frozen encoder, through the feature cache.

        Under torchrun rank 0 alone reads and writes the cache: it names each chunk the cache
        lacks, every process encodes its share of that chunk (``_encode_all``), and at the end
        rank 0 sends all the features to the others. A cancel is rank 0's to make.
        """
        hidden = self.encoder.info.hidden_size
        if distributed.world_size() == 1:
            return cached_features(
                key,
                hidden,
                self._encode_positions,
                cache=cache,
                progress=self.progress,
                cancel=self.cancel,
            )
        if distributed.is_main():

            def encode(positions: Sequence[int], advance: Callable[[int], None]) -> torch.Tensor:
                distributed.from_main(positions)
                return self._encode_positions(positions, advance)

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
                self._encode_positions(positions, lambda _n: None)
            feats = torch.empty((key.n_texts, hidden))
        return distributed.broadcast_rows(feats)

    @contextlib.contextmanager
    def _epoch_threads(self) -> Iterator[None]:
        """Head-only epochs on the CPU run in one thread, then the thread count comes back.

        Their matrices are tiny (a batch x hidden x d), so threads only add synchronisation;
        and on a busy CPU the threads wait for each other. On two shared cores, 10 epochs over
        waimai_10k's cached features took 142 s with two threads and 3.2 s with one
        (bench/results/feature_cache.md).
        """
        if self.tuned or self.device.type != "cpu":
            yield
            return
        with one_torch_thread():
            yield

    def _tokenize(self, texts: Sequence[str]) -> Batches:
        return Batches(self.encoder.tokenizer, texts, self.config.max_length, self.multiple)

    def _begin(self, name: str, unit: str, total: int) -> None:
        """Start a stage of ``total`` units: name it, count from 0 (``self._advance``)."""
        stage(self.progress, name, unit)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if self.progress is not None:
                self.progress(min(done, total), total)

        self.advance = advance
        advance(0)

    def _advance(self, n: int) -> None:
        if self.advance is not None:
            self.advance(n)

    def _epoch(
        self,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_feats: torch.Tensor | None,
        val_feats: torch.Tensor | None,
    ) -> tuple[EpochMetrics, np.ndarray]:
        """Train one pass over the training rows in a seeded order; validate; say how it went."""
        t0 = time.perf_counter()
        rows = len(self.train_y) + (len(self.val_y) if self.tuned else 0)
        self._begin(f"epoch {epoch} of {self.config.epochs}", "rows", rows)
        self.head.train()
        if self.tuned:
            self.model.train()
        # The same order in every process: under torchrun each takes its share of each batch.
        order = torch.randperm(len(self.train_y), generator=self.generator).tolist()
        losses = _Losses()

        def step(index: Sequence[int]) -> None:
            losses.pending.append(self._step(index, optimizer, scheduler, train_feats))
            losses.rows.append(len(index))
            if len(losses.pending) >= self.sync_every:
                self._read_losses(losses, epoch)

        self._chunks(order, step, self._advance)
        self._read_losses(losses, epoch)
        self._check_weights(optimizer, epoch)
        val_loss, pred = self._evaluate(val_feats)
        y = self.val_y.numpy()
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=losses.mean(),
            val_loss=val_loss,
            val_accuracy=float(np.mean(pred == y)) if len(y) else 0.0,
            val_macro_f1=macro_f1(y, pred, self.num_classes),
            seconds=time.perf_counter() - t0,
            head_learning_rate=optimizer.param_groups[0]["lr"],
        )
        log.debug(
            "epoch %d: loss %.4f, val acc %.4f, val macro-F1 %.4f",
            epoch,
            metrics.train_loss,
            metrics.val_accuracy,
            metrics.val_macro_f1,
        )
        return metrics, pred

    def _step(
        self,
        index: Sequence[int],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_feats: torch.Tensor | None,
    ) -> torch.Tensor:
        """One optimizer step on the batch at ``index``; return its loss summed over the rows
        this process took (all of them in a single process, and with the encoder frozen)."""
        optimizer.zero_grad(set_to_none=True)
        rows, weight = list(index), 1.0
        if self.net is not None:
            rows = list(distributed.shard(index))
            if not rows:  # a last batch smaller than the world: still join the gradient sync
                rows, weight = list(index[:1]), 0.0
        if train_feats is not None:
            logits = self.head(train_feats[rows].to(self.device)).float()
        else:
            assert self.train_tok is not None and self.net is not None
            logits = self.net(**self.train_tok.collate(rows, self.device))
        target = self.train_y[rows].to(self.device)
        total = nn.functional.cross_entropy(logits, target, reduction="sum") * weight
        # The batch's mean loss. DistributedDataParallel averages the processes' gradients, so
        # each scales its rows' sum by the world size: the average is then the mean over all
        # the batch's rows, as in one process, however unevenly the rows were shared.
        world = distributed.world_size() if self.net is not None else 1
        (total * (world / len(index))).backward()
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        self.trained_rows += len(index)
        scheduler.step()
        return total.detach()

    def _read_losses(self, losses: _Losses, epoch: int) -> None:
        """Read the pending batches' losses; stop on one that is not finite, or on a cancel.

        Under torchrun this is one all-reduce in every process at the same batch: it sums the
        processes' shares of each loss (with the encoder training) and their cancel flags, so
        they stop together.
        """
        pending = torch.stack(losses.pending) if losses.pending else torch.zeros(0)
        pending = pending.to(self.device)
        if distributed.world_size() > 1:
            asked = float(self.cancel is not None and self.cancel.is_set())
            flag = torch.tensor([asked], device=self.device)
            if self.net is not None:
                summed = distributed.sum_across(torch.cat([pending, flag]))
                pending, flag = summed[:-1], summed[-1:]
            else:  # every process trained on every row: the losses are the same everywhere
                flag = distributed.sum_across(flag)
            if flag.item() > 0:
                raise Cancelled("Fine-tuning was cancelled.")
        for total, n in zip(pending.tolist(), losses.rows, strict=True):
            loss = total / n
            if not math.isfinite(loss):
                batch = len(losses.read) + 1
                raise _diverged(
                    f"at epoch {epoch}, batch {batch} (loss is {loss})", self.config.strategy
                )
            losses.read.append((loss, n))
        losses.pending.clear()
        losses.rows.clear()

    def _check_weights(self, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Stop when what trains holds values that are not finite (a loss can stay finite
        a step longer than the weights: the last step of an epoch has no loss after it)."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            where = f"in epoch {epoch} (the weights are no longer finite numbers)"
            raise _diverged(where, self.config.strategy)

    def _result(
        self, history: list[EpochMetrics], best: _Best, cancelled: bool, message: str
    ) -> Run:
        """The run with the best epoch's weights restored."""
        if best.state is not None:
            self._restore(best.state)
        self.head.eval()
        self.model.eval()
        pred = best.pred if best.pred is not None else np.zeros(len(self.val_y), dtype=np.int64)
        return Run(
            config=self.config,
            head=self.head,
            encoder=self.encoder,
            encoder_changed=self.tuned,
            label_names=(),
            history=history,
            cancelled=cancelled,
            best_epoch=best.epoch,
            confusion=confusion_matrix(self.val_y.numpy(), pred, self.num_classes)
            if history
            else [],
            batch_size_used=self.batch_size,
            message=message,
        )

    # -- batching with progress, cancel and out-of-memory recovery ---------------------------
    def _chunks(
        self,
        order: Sequence[int],
        step: Callable[[Sequence[int]], None],
        advance: Callable[[int], None],
        size: str = "batch_size",
    ) -> None:
        """Run ``step`` over ``order`` in batches of ``self.<size>``, halving it on GPU
        out-of-memory; ``advance(n)`` after each batch of n.

        Under torchrun a cancel is not taken here: the processes must stop at the same batch,
        so they agree on it when they read the losses (``_read_losses``).
        """
        pos = 0
        while pos < len(order):
            if distributed.world_size() == 1:
                check_cancel(self.cancel, "Fine-tuning")
            index = order[pos : pos + getattr(self, size)]
            try:
                step(index)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                self._halve_batch(exc, size)
                continue
            pos += len(index)
            advance(len(index))

    def _halve_batch(self, exc: BaseException, size: str = "batch_size") -> None:
        _free_memory(self.device)
        if size == "batch_size" and distributed.world_size() > 1:
            # Every process must take the same steps; one cannot halve its batch alone.
            world = distributed.world_size()
            raise BadConfig(
                f"Out of GPU memory in process {distributed.rank()} of {world} at a batch of "
                f"{self.batch_size} rows ({-(-self.batch_size // world)} per process). Training "
                "on several processes cannot lower the batch part-way: start again with a "
                "smaller --batch-size (it counts the rows of all processes together), or "
                "a lower --max-length."
            ) from exc
        if getattr(self, size) == 1:
            raise BadConfig(
                "Out of GPU memory even with batch size 1. Lower --max-length, choose "
                "strategy 'head' or a smaller model, or use --device cpu."
            ) from exc
        setattr(self, size, max(1, getattr(self, size) // 2))
        log.warning("Out of memory: %s halved to %d", size.replace("_", " "), getattr(self, size))

    # -- encoder forward and evaluation ------------------------------------------------------
    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.reader.features(**batch)

    @torch.no_grad()
    def _encode_all(
        self,
        tok: Batches,
        advance: Callable[[int], None],
        collect: Callable[[Sequence[int], torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Features of every text of ``tok`` in its order, shortest batches first; with
        ``collect``, each batch's positions in ``tok`` and last-layer states go to it too.

        Under torchrun each process encodes its share of the texts and gets the others'.
        """
        self.model.eval()
        mine = distributed.shard(range(len(tok)))
        assert isinstance(mine, range)
        feats = torch.empty((len(mine), self.encoder.info.hidden_size))

        def step(index: Sequence[int]) -> None:
            at = [i - mine.start for i in index]
            batch = tok.collate(index, self.device)
            if collect is None:
                feats[at] = self._features(batch).cpu()
                return
            features, states = self.reader.features_and_states(**batch)
            feats[at] = features.cpu()
            collect(index, states)

        order = [i for i in tok.by_length() if i in mine]
        lanes = cpu_lanes() if self.device.type == "cpu" else 1
        done = 0
        if lanes > 1 and distributed.world_size() == 1:  # batches side by side, a core each

            def finished(index: Sequence[int]) -> None:
                nonlocal done
                done += len(index)
                advance(len(index))

            size = self.encode_batch_size
            try:
                run_in_lanes(
                    (order[p : p + size] for p in range(0, len(order), size)),
                    step,
                    finished,
                    lanes,
                    lambda: check_cancel(self.cancel, "Fine-tuning"),
                )
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                self._halve_batch(exc, "encode_batch_size")  # the rest one batch at a time
        # What is left: everything without lanes, the rest after an out-of-memory, else none.
        self._chunks(order[done:], step, advance, "encode_batch_size")
        if len(mine) == len(tok):
            return feats
        feats = distributed.gather_rows(feats, len(tok))
        advance(len(tok) - len(mine))
        return feats

    def _encode_positions(
        self, positions: Sequence[int], advance: Callable[[int], None]
    ) -> torch.Tensor:
        """Features of the texts at ``positions`` of ``self.texts`` (one feature-cache chunk);
        their word states go to the collector when there is one."""
        collector = self.collector
        texts = [self.texts[i] for i in positions]
        if collector is None:
            return self._encode_all(self._tokenize(texts), advance)
        tok = Batches(
            self.encoder.tokenizer, texts, self.config.max_length, self.multiple, offsets=True
        )
        assert tok.offsets is not None and tok.special is not None
        offsets, special = tok.offsets, tok.special

        def collect(index: Sequence[int], states: torch.Tensor) -> None:
            collector.add(
                [positions[i] for i in index],
                states,
                [tok.ids[i] for i in index],
                [offsets[i] for i in index],
                [special[i] for i in index],
            )

        return self._encode_all(tok, advance, collect)

    @torch.no_grad()
    def _evaluate(self, val_feats: torch.Tensor | None) -> tuple[float, np.ndarray]:
        self.head.eval()
        self.model.eval()
        if val_feats is None:
            assert self.val_tok is not None
            val_feats = self._encode_all(self.val_tok, self._advance)
        logits = self.head(val_feats.to(self.device)).float().cpu()
        loss = nn.functional.cross_entropy(logits, self.val_y).item()
        return loss, logits.argmax(1).numpy()

    # -- best epoch and clean-up -------------------------------------------------------------
    def _snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        state = {"head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}}
        if self.tuned:
            trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
            state["encoder"] = {
                k: v.detach().cpu().clone()
                for k, v in self.model.state_dict().items()
                if k in trainable
            }
        return state

    def _restore(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.head.load_state_dict(state["head"])
        if "encoder" in state:
            self.model.load_state_dict(state["encoder"], strict=False)

    def release(self) -> None:
        """Move the encoder and head to where the caller keeps the encoder; free GPU caches.

        The caller's encoder is left as it was found, and a run lives where its encoder came
        from: trained on the GPU from an encoder kept on the CPU, it holds no GPU memory
        afterwards (building a matrix moves what it needs to the device for the time it
        takes); from an encoder kept on the GPU (the app's), it stays there, ready for use.
        """
        self.net = None  # DistributedDataParallel's buffers go with it
        self.model.to(self.home)
        self.head.to(self.home)
        _free_memory(self.device)
