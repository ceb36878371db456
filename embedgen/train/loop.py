"""Fine-tune a projection head (and, by strategy, encoder layers) on labelled text.

Sentence features are the encoder's last hidden states averaged over real tokens, so the
projection learns in the space the contextual token vectors live in. Read top to bottom:
:func:`finetune` splits the data and hands it to a ``_Trainer``, which plans the optimizer,
reads the texts once when the encoder is frozen (``embedgen.train.encode``: through the
feature cache, so a re-run with other head settings skips it), runs epochs until the last one
or an early stop, and restores the best epoch. What trains is ``embedgen.train.trainable``'s;
batches halve on a GPU out-of-memory error (``embedgen.train.halving``). A hook may look at
the frozen pass's hidden states (:class:`~embedgen.train.encode.StatesHook`): the loop knows
nothing of words or matrices.

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
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from embedgen.data import LabelledData, split
from embedgen.device import resolve_device
from embedgen.errors import BadConfig, Cancelled
from embedgen.lanes import one_torch_thread
from embedgen.models import Encoder
from embedgen.progress import ProgressFn, stage
from embedgen.tokens import max_positions, text_lengths
from embedgen.train import distributed
from embedgen.train.batches import Batches, pad_multiple
from embedgen.train.config import FinetuneConfig, Strategy
from embedgen.train.encode import ENCODE_BATCH, Pooled, StatesHook, encode_all, frozen_features
from embedgen.train.halving import Halving, free_memory
from embedgen.train.head import Head
from embedgen.train.metrics import confusion_matrix, macro_f1
from embedgen.train.trainable import (
    model_to_train,
    restore_frozen_linears,
    transformer_layers,
)

log = logging.getLogger(__name__)

__all__ = ["ENCODE_BATCH", "EpochMetrics", "Run", "finetune", "lr_factor", "transformer_layers"]

# Training batches between two reads of their losses, by device type (each batch elsewhere).
# A read waits for the device and, under torchrun, is one small all-reduce that also carries
# every process's cancel.
SYNC_EVERY = {"cuda": 50}


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
    interrupted: bool = False  # its process stopped (its best epoch kept on disk is this)
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
    states_hook: StatesHook | None = None,
    on_best: Callable[[Run], None] | None = None,
) -> Run:
    """Train a head (and, by strategy, encoder layers) on ``data``; return the :class:`Run`.

    The encoder passed in is never changed: strategies that tune it work on a copy.
    ``progress`` gets (done, total) within each stage ("encoding N texts" in texts, or
    "tokenizing N texts"; then "epoch k of n" in rows); ``cancel`` is checked before every
    batch; ``on_epoch`` gets each epoch's metrics as soon as they are known; ``states_hook``
    sees the frozen encoder's hidden states batch by batch (strategy ``head``); ``on_best``
    gets the run as it stands whenever an epoch beats the best so far (its head and encoder
    are that epoch's until training goes on), to keep it on disk.

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
    summary = data.summary()
    summary.update({"rows_train": len(train), "rows_validation": len(val)})

    def described(run: Run) -> Run:
        return replace(run, label_names=tuple(data.label_names), data_summary=summary)

    with distributed.process_group(resolve_device(config.device)):
        trainer = _Trainer(encoder, train, val, config, data.texts, progress, cancel)
        trainer.on_epoch, trainer.states_hook = on_epoch, states_hook
        if on_best is not None:
            trainer.on_best = lambda run: on_best(described(run))
        try:
            run = trainer.run()
        finally:
            trainer.release()
    return described(run)


def lr_factor(seen: int, batch: int, total: int, warmup: int) -> float:
    """The learning-rate multiplier for the batch after ``seen`` of ``total`` training rows.

    Linear warm-up over the first ``warmup`` rows (its first batch gets batch/warmup of the
    rate), then linear decay to zero at ``total``. Counting rows rather than optimizer steps
    keeps the schedule the same length when the batch size changes mid-run.
    """
    ramp = min(1.0, (seen + batch) / warmup) if warmup > 0 else 1.0
    decay = max(0.0, (total - seen) / max(1, total - warmup)) if seen >= warmup else 1.0
    return min(ramp, decay)


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

    def take(
        self, device: torch.device, cancel: threading.Event | None, *, shared: bool, where: str
    ) -> None:
        """Read the pending batches' losses; stop on one that is not finite (``where``: at
        which epoch, for the message), or on a cancel.

        Under torchrun this is one all-reduce in every process at the same batch: it sums the
        processes' shares of each loss (``shared``: with the encoder training) and their
        cancel flags, so they stop together.
        """
        pending = torch.stack(self.pending) if self.pending else torch.zeros(0)
        pending = pending.to(device)
        if distributed.world_size() > 1:
            flag = torch.tensor([float(cancel is not None and cancel.is_set())], device=device)
            if shared:
                summed = distributed.sum_across(torch.cat([pending, flag]))
                pending, flag = summed[:-1], summed[-1:]
            else:  # every process trained on every row: the losses are the same everywhere
                flag = distributed.sum_across(flag)
            if flag.item() > 0:
                raise Cancelled("Fine-tuning was cancelled.")
        for total, n in zip(pending.tolist(), self.rows, strict=True):
            loss = total / n
            if not math.isfinite(loss):
                raise _Diverged(f"{where}, batch {len(self.read) + 1} (loss is {loss})")
            self.read.append((loss, n))
        self.pending.clear()
        self.rows.clear()


@dataclass
class _Best:
    """The best epoch so far: its macro-F1, predictions and a copy of what trained."""

    f1: float = -1.0
    epoch: int = 0
    pred: np.ndarray | None = None
    state: dict[str, dict[str, torch.Tensor]] | None = None

    @staticmethod
    def snapshot(head: Head, model: nn.Module | None) -> dict[str, dict[str, torch.Tensor]]:
        """A copy of the head's weights and of what trains of ``model`` (None: it is frozen)."""
        state = {"head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}
        if model is not None:
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            state["encoder"] = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in trainable
            }
        return state

    def confusion(self, y: np.ndarray, classes: int) -> list[list[int]]:
        """The validation confusion matrix at the best epoch ([] when none finished)."""
        return confusion_matrix(y, self.pred, classes) if self.pred is not None else []

    def restore(self, head: Head, model: nn.Module) -> None:
        """Put the best epoch's weights back into ``head`` and ``model``."""
        if self.state is None:
            return
        head.load_state_dict(self.state["head"])
        if "encoder" in self.state:
            model.load_state_dict(self.state["encoder"], strict=False)


def _metrics(
    epoch: int,
    train_loss: float,
    val_loss: float,
    pred: np.ndarray,
    y: np.ndarray,
    classes: int,
    started: float,
    head_learning_rate: float,
) -> EpochMetrics:
    """How an epoch went: losses, validation accuracy and macro-F1 of ``pred`` against ``y``."""
    metrics = EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=val_loss,
        val_accuracy=float(np.mean(pred == y)) if len(y) else 0.0,
        val_macro_f1=macro_f1(y, pred, classes),
        seconds=time.perf_counter() - started,
        head_learning_rate=head_learning_rate,
    )
    log.debug(
        "epoch %d: loss %.4f, val acc %.4f, val macro-F1 %.4f",
        epoch,
        metrics.train_loss,
        metrics.val_accuracy,
        metrics.val_macro_f1,
    )
    return metrics


def _optimizer(
    head: Head, model: nn.Module, config: FinetuneConfig, factor: Callable[[], float]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the head and what trains of ``model``, the rates scaled by ``factor()``
    before each step (the schedule over rows, :func:`lr_factor`)."""
    params = [{"params": head.parameters(), "lr": config.head_learning_rate}]
    enc_params = [p for p in model.parameters() if p.requires_grad]
    if enc_params:
        params.append({"params": enc_params, "lr": config.learning_rate})
    optimizer = torch.optim.AdamW(params, weight_decay=config.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: factor())


def _cancelled(epochs_done: int, epochs: int, *, cached: bool) -> str:
    """What a cancelled run says: the epochs it kept, or that it trained no head (and, for a
    frozen encoder with the feature cache on, that its encoded texts are kept)."""
    if epochs_done:
        return f"Cancelled after {epochs_done} of {epochs} epochs."
    message = "Cancelled before the first epoch finished; no head was trained."
    if cached:
        message += (
            " The texts encoded so far are cached: the next run on this model, data and max "
            "length starts from there."
        )
    return message


class _Diverged(Exception):
    """A loss or weight stopped being a finite number (where, in words)."""


def _check_finite(optimizer: torch.optim.Optimizer, where: str) -> None:
    """Stop when what trains holds values that are not finite (a loss can stay finite a step
    longer than the weights: the last step of an epoch has no loss after it)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise _Diverged(f"{where} (the weights are no longer finite numbers)")


@contextlib.contextmanager
def _epoch_threads(tuned: bool, device: torch.device) -> Iterator[None]:
    """Head-only epochs on the CPU run in one thread, then the thread count comes back.

    Their matrices are tiny (a batch x hidden x d), so threads only add synchronisation; and
    on a busy CPU the threads wait for each other. On two shared cores, 10 epochs over
    waimai_10k's cached features took 142 s with two threads and 3.2 s with one
    (bench/results/feature_cache.md).
    """
    if tuned or device.type != "cpu":
        yield
        return
    with one_torch_thread():
        yield


class _Counter:
    """Counts one stage's units for ``progress``: named, from 0 to ``total``."""

    def __init__(self, progress: ProgressFn | None, name: str, unit: str, total: int) -> None:
        stage(progress, name, unit)
        self.progress, self.total, self.done = progress, total, 0
        self(0)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


class _Classifier(nn.Module):
    """The pooled encoder and the head as one module. Under torchrun DistributedDataParallel
    wraps it, so the gradients of the encoder's layers and of the head sync together."""

    def __init__(self, pooled: Pooled, head: Head) -> None:
        super().__init__()
        self.pooled = pooled
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled.features(input_ids, attention_mask)).float()


class _Trainer:
    """One fine-tuning run; holds the mutable state the loop needs."""

    def __init__(
        self,
        encoder: Encoder,
        train: LabelledData,
        val: LabelledData,
        config: FinetuneConfig,
        texts: Sequence[str],
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> None:
        self.config, self.progress, self.cancel = config, progress, cancel
        self.on_epoch: Callable[[EpochMetrics], None] | None = None
        self.on_best: Callable[[Run], None] | None = None
        self.states_hook: StatesHook | None = None
        self.device = distributed.local_device(resolve_device(config.device))
        self.tuned = config.strategy is not Strategy.HEAD
        self.batches = Halving(config.batch_size, self.device, shared=True, cancel=cancel)
        # Encoding needs no gradients, so on a GPU it takes bigger batches than training: at
        # the training batch (32) a bert-base pass is launch-bound (BENCHMARKS.md, "GPU").
        size = max(config.batch_size, ENCODE_BATCH.get(self.device.type, 0))
        self.encode_batches = Halving(size, self.device, name="encode batch size", cancel=cancel)
        self.num_classes = len(train.label_names)
        # Where the caller keeps the encoder; the run's modules go back there when it ends.
        self.home = next(encoder.model.parameters()).device
        self.original = encoder.model
        # The tuned strategies' frozen linear layers in bf16 once (they go back at the end).
        self.model, self.cast_frozen = model_to_train(encoder.model, config, self.device)
        self.encoder = Encoder(model=self.model, tokenizer=encoder.tokenizer, info=encoder.info)
        torch.manual_seed(config.seed)
        hidden = encoder.info.hidden_size
        self.head = Head(hidden, config.dim, self.num_classes, config.dropout).to(self.device)
        self.pooled = Pooled(self.model, config.pooling, self.device, hidden)
        # What the tuned strategies step through: in DistributedDataParallel under torchrun.
        classifier = _Classifier(self.pooled, self.head)
        self.net = distributed.wrap(classifier, self.device) if self.tuned else None
        self.sync_every = SYNC_EVERY.get(self.device.type, 1)
        self.train_y, self.val_y = (torch.tensor(d.labels, dtype=torch.long) for d in (train, val))
        self.train_texts, self.val_texts, self.all_texts = train.texts, val.texts, texts
        # Every distinct text of the data once, in the data's order: the frozen encoder's
        # features are cached for these, so another seed or split finds them too.
        self.texts = list(dict.fromkeys(texts))
        self.train_tok: Batches | None = None  # tokenised when the encoder trains
        self.val_tok: Batches | None = None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.advance: Callable[[int], None] = lambda _n: None  # counts the stage's units
        self.trained_rows = 0  # rows the optimizer has stepped over; drives the LR schedule
        self.best = _Best()  # the best epoch so far

    def run(self) -> Run:
        history: list[EpochMetrics] = []
        best, cancelled, message = _Best(), False, ""
        try:
            best, message = self._epochs(history)
        except Cancelled:
            cancelled, best = True, self.best
            cached = not self.tuned and self.config.cache_features
            message = _cancelled(len(history), self.config.epochs, cached=cached)
            log.info(message)
        finally:
            restore_frozen_linears(self.model, self.original, self.cast_frozen)
            self.cast_frozen = []
        return self._result(history, best, cancelled, message)

    def _epochs(self, history: list[EpochMetrics]) -> tuple[_Best, str]:
        """Epochs until the last or an early stop; the best one, and why it stopped early."""
        cfg = self.config
        rows_total = max(1, cfg.epochs * len(self.train_y))
        warmup = rows_total // 10 if self.tuned else 0
        optimizer, scheduler = _optimizer(
            self.head,
            self.model,
            cfg,
            lambda: lr_factor(self.trained_rows, self.batches.size, rows_total, warmup),
        )
        train_feats, val_feats = self._prepare()
        with _epoch_threads(self.tuned, self.device):
            for epoch in range(1, cfg.epochs + 1):
                metrics, pred = self._epoch(epoch, optimizer, scheduler, train_feats, val_feats)
                history.append(metrics)
                if self.on_epoch is not None:
                    self.on_epoch(metrics)
                if metrics.val_macro_f1 > self.best.f1:
                    kept = _Best.snapshot(self.head, self.model if self.tuned else None)
                    self.best = _Best(metrics.val_macro_f1, epoch, pred, kept)
                    if self.on_best is not None:  # the weights are this epoch's: keep them
                        self.on_best(_run_of(self, history, self.best))
                elif (
                    cfg.patience
                    and epoch - self.best.epoch >= cfg.patience
                    and epoch < cfg.epochs  # the last epoch ends the run anyway
                ):
                    message = (
                        f"Stopped early after epoch {epoch}: "
                        f"no better macro-F1 since {self.best.epoch}."
                    )
                    log.info(message)
                    return self.best, message
        return self.best, ""

    def _prepare(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """With the encoder frozen, every text's features once (from the feature cache where
        it has them); otherwise tokenise the texts for the epochs and return (None, None)."""
        if self.tuned:
            n = len(self.train_texts) + len(self.val_texts)
            self.advance = _Counter(self.progress, f"tokenizing {n:,} texts", "texts", n)
            tokenizer, multiple = self.encoder.tokenizer, pad_multiple(self.device)
            self.train_tok, self.val_tok = (
                Batches(tokenizer, texts, self.config.max_length, multiple)
                for texts in (self.train_texts, self.val_texts)
            )
            self.advance(n)
            return None, None
        feats = frozen_features(
            self.encoder,
            self.texts,
            self.all_texts,
            self.config,
            self.device,
            self.encode_batches,
            progress=self.progress,
            cancel=self.cancel,
            hook=self.states_hook,
        )
        position = {text: i for i, text in enumerate(self.texts)}
        train_at = [position[t] for t in self.train_texts]
        val_at = [position[t] for t in self.val_texts]
        return feats[train_at], feats[val_at]

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
        self.advance = _Counter(
            self.progress, f"epoch {epoch} of {self.config.epochs}", "rows", rows
        )
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
                losses.take(self.device, self.cancel, shared=self.net is not None, where=where)

        where = f"at epoch {epoch}"
        try:
            self.batches.run(order, step, self.advance)
            losses.take(self.device, self.cancel, shared=self.net is not None, where=where)
            _check_finite(optimizer, f"in epoch {epoch}")
        except _Diverged as exc:
            flags = "--head-lr" if self.config.strategy is Strategy.HEAD else "--head-lr / --lr"
            raise BadConfig(
                f"Training diverged {exc}. Lower the learning rate ({flags}) and start again."
            ) from None
        val_loss, pred = self._evaluate(val_feats)
        lr = optimizer.param_groups[0]["lr"]
        y = self.val_y.numpy()
        return _metrics(epoch, losses.mean(), val_loss, pred, y, self.num_classes, t0, lr), pred

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

    def _result(
        self, history: list[EpochMetrics], best: _Best, cancelled: bool, message: str
    ) -> Run:
        """The run with the best epoch's weights restored."""
        best.restore(self.head, self.model)
        self.head.eval()
        self.model.eval()
        return _run_of(self, history, best, cancelled=cancelled, message=message)

    @torch.no_grad()
    def _evaluate(self, val_feats: torch.Tensor | None) -> tuple[float, np.ndarray]:
        self.head.eval()
        self.model.eval()
        if val_feats is None:
            assert self.val_tok is not None
            val_feats = encode_all(
                self.pooled, self.val_tok, self.encode_batches, self.advance, cancel=self.cancel
            )
        logits = self.head(val_feats.to(self.device)).float().cpu()
        loss = nn.functional.cross_entropy(logits, self.val_y).item()
        return loss, logits.argmax(1).numpy()

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
        free_memory(self.device)


def _run_of(trainer: _Trainer, history: list[EpochMetrics], best: _Best, **ended: Any) -> Run:
    """The run of ``trainer``'s head and encoder as they are now, ``best`` its best epoch;
    ``ended``: how it ended (cancelled, message), for the run training returns."""
    return Run(
        trainer.config,
        trainer.head,
        trainer.encoder,
        encoder_changed=trainer.tuned,
        label_names=(),
        history=list(history),
        best_epoch=best.epoch,
        confusion=best.confusion(trainer.val_y.numpy(), trainer.num_classes),
        batch_size_used=trainer.batches.size,
        **ended,
    )
