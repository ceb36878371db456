"""Fine-tune a projection head (and optionally the encoder's top layers) on labelled text.

The head is ``Linear(hidden -> d)`` followed by a classifier over the labels. Sentence features are
the encoder's last hidden states averaged over real tokens, so the projection learns in the same
space the contextual token vectors live in.

Strategies:
- ``head``: encoder frozen; the data is encoded once, the features cached, and the head trained on
  the cache for many cheap epochs.
- ``top-k``: the top k transformer layers train together with the head.
- ``full``: the whole encoder trains, except the input embeddings unless asked.
"""

from __future__ import annotations

import copy
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from embedgen.data import LabelledData
from embedgen.device import autocast, resolve_device
from embedgen.errors import BadConfig
from embedgen.models import Encoder

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


class Strategy(enum.StrEnum):
    HEAD = "head"
    TOP_K = "top-k"
    FULL = "full"


class Pooling(enum.StrEnum):
    MEAN = "mean"
    CLS = "cls"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides a fine-tuning run; written into run.json and every manifest."""

    strategy: Strategy = Strategy.HEAD
    dim: int = 128
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 2e-5  # encoder layers (top-k, full)
    head_learning_rate: float = 5e-3
    weight_decay: float = 0.01
    dropout: float = 0.1
    top_k: int = 2
    train_embeddings: bool = False
    pooling: Pooling = Pooling.MEAN
    max_length: int = 128
    patience: int = 3  # epochs without a better validation macro-F1 before stopping; 0 = never
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "strategy", Strategy(self.strategy))
            object.__setattr__(self, "pooling", Pooling(self.pooling))
        except ValueError as exc:
            raise BadConfig(f"{exc}. Strategies: head, top-k, full; pooling: mean, cls.") from None
        checks = [
            (self.dim >= 1, f"dim must be at least 1 (got {self.dim})"),
            (self.epochs >= 1, f"epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"batch size must be at least 1 (got {self.batch_size})"),
            (self.learning_rate > 0, f"learning rate must be positive (got {self.learning_rate})"),
            (self.head_learning_rate > 0, "head learning rate must be positive"),
            (self.weight_decay >= 0, "weight decay must not be negative"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1) (got {self.dropout})"),
            (self.top_k >= 1, f"top-k needs at least 1 layer (got {self.top_k})"),
            (8 <= self.max_length <= 8192, f"max length must be 8..8192 (got {self.max_length})"),
            (self.patience >= 0, "patience must not be negative"),
            (0 < self.val_fraction <= 0.5, "validation fraction must be in (0, 0.5]"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadConfig(message + ".")

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


class Head(nn.Module):
    """Projection ``Linear(hidden -> dim)`` then a classifier over the labels."""

    def __init__(self, hidden: int, dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The d-dim vectors the embedding matrix uses (before the activation)."""
        return self.projection(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.tanh(self.project(features))))


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
    status: RunStatus = RunStatus.FINISHED
    best_epoch: int = 0
    confusion: list[list[int]] = field(default_factory=list)
    data_summary: dict[str, Any] = field(default_factory=dict)
    batch_size_used: int = 0
    message: str = ""
    folder: str | None = None

    @property
    def best(self) -> EpochMetrics | None:
        return next((m for m in self.history if m.epoch == self.best_epoch), None)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``."""
    scores = []
    for c in range(num_classes):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        fp = int(np.sum((y_pred == c) & (y_true != c)))
        fn = int(np.sum((y_pred != c) & (y_true == c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[list[int]]:
    """Rows are true labels, columns predicted labels."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm.tolist()


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


def _set_trainable(model: nn.Module, config: FinetuneConfig) -> int:
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


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Sentence features from token states: mean over real tokens, or the first token."""
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


GPU_PAD_MULTIPLE = 16


class _Batches:
    """Tokenised texts, padded per batch to the longest text, rounded up to ``multiple``.

    Padding to the batch's longest text keeps short batches cheap. On a GPU the width is
    rounded up to a multiple of 16 to keep the number of distinct shapes small: on an H100,
    PyTorch's cuDNN attention builds a plan for every new shape, and a first bf16 pass over
    4,096 texts of exact widths ran at 955 rows/s against 4,857 rows/s once those widths
    had plans (BENCHMARKS.md). On the CPU there are no plans, and rounding would only add work.
    """

    def __init__(
        self, tokenizer: Any, texts: Sequence[str], max_length: int, multiple: int = 1
    ) -> None:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.ids: list[list[int]] = enc["input_ids"]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_length = max_length
        self.multiple = multiple

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, index: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
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
        return sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _Cancelled(Exception):
    pass


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
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.progress = progress
        self.cancel = cancel
        self.on_epoch = on_epoch
        self.batch_size = config.batch_size
        self.num_classes = len(train.label_names)
        self.tuned = config.strategy is not Strategy.HEAD
        # Where the caller keeps the encoder; the run's modules go back there when it ends.
        self.home = next(encoder.model.parameters()).device
        model = copy.deepcopy(encoder.model) if self.tuned else encoder.model
        self.model = model.to(self.device)
        self.encoder = Encoder(model=self.model, tokenizer=encoder.tokenizer, info=encoder.info)
        trainable = _set_trainable(self.model, config) if self.tuned else 0
        log.info("Strategy %s: %d trainable encoder parameters", config.strategy, trainable)
        torch.manual_seed(config.seed)
        self.head = Head(encoder.info.hidden_size, config.dim, self.num_classes, config.dropout).to(
            self.device
        )
        self.train_y = torch.tensor(train.labels, dtype=torch.long)
        self.val_y = torch.tensor(val.labels, dtype=torch.long)
        multiple = GPU_PAD_MULTIPLE if self.device.type == "cuda" else 1
        self.train_tok = _Batches(encoder.tokenizer, train.texts, config.max_length, multiple)
        self.val_tok = _Batches(encoder.tokenizer, val.texts, config.max_length, multiple)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.done = 0  # rows processed so far: encoding passes and training passes
        self.total = 0
        self.trained_rows = 0  # rows the optimizer has stepped over; drives the LR schedule

    # -- progress and cancel -------------------------------------------------------------
    def _tick(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled

    # -- batching with out-of-memory recovery --------------------------------------------
    def _chunks(self, order: Sequence[int], step: Callable[[Sequence[int]], None]) -> None:
        """Run ``step`` over ``order`` in batches, halving the batch on GPU out-of-memory."""
        pos = 0
        while pos < len(order):
            self._check_cancel()
            index = order[pos : pos + self.batch_size]
            try:
                step(index)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                _free_memory(self.device)
                if self.batch_size == 1:
                    raise BadConfig(
                        "Out of GPU memory even with batch size 1. Lower --max-length, choose "
                        "strategy 'head' or a smaller model, or use --device cpu."
                    ) from exc
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("Out of memory: batch size halved to %d", self.batch_size)
                continue
            pos += len(index)
            self._tick(len(index))

    # -- encoder forward -----------------------------------------------------------------
    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(self.device):
            out = self.model(**batch)
        return pool(out.last_hidden_state, batch["attention_mask"], self.config.pooling).float()

    @torch.no_grad()
    def _encode_all(self, tok: _Batches) -> torch.Tensor:
        """Features of every text (frozen encoder), in the original order."""
        self.model.eval()
        order = tok.by_length()
        feats = torch.empty((len(tok), self.encoder.info.hidden_size))

        def step(index: Sequence[int]) -> None:
            feats[list(index)] = self._features(tok.collate(index, self.device)).cpu()

        self._chunks(order, step)
        return feats

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, val_feats: torch.Tensor | None) -> tuple[float, np.ndarray]:
        self.head.eval()
        self.model.eval()
        if val_feats is None:
            val_feats = self._encode_all(self.val_tok)
        logits = self.head(val_feats.to(self.device)).float().cpu()
        loss = nn.functional.cross_entropy(logits, self.val_y).item()
        return loss, logits.argmax(1).numpy()

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> Run:
        cfg = self.config
        n_train, n_val = len(self.train_y), len(self.val_y)
        cached = not self.tuned
        # Progress and the learning-rate schedule count rows, not batches, so both stay right
        # when an out-of-memory error halves the batch part-way.
        if cached:
            self.total = (n_train + n_val) + cfg.epochs * n_train
        else:
            self.total = cfg.epochs * (n_train + n_val)
        params = [{"params": self.head.parameters(), "lr": cfg.head_learning_rate}]
        enc_params = [p for p in self.model.parameters() if p.requires_grad]
        if enc_params:
            params.append({"params": enc_params, "lr": cfg.learning_rate})
        optimizer = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
        rows_total = max(1, cfg.epochs * n_train)
        warmup_rows = rows_total // 10 if self.tuned else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda _step: lr_factor(self.trained_rows, self.batch_size, rows_total, warmup_rows),
        )

        history: list[EpochMetrics] = []
        best_f1, best_epoch, best_state = -1.0, 0, None
        best_pred = np.zeros(n_val, dtype=np.int64)
        status, message = RunStatus.FINISHED, ""
        train_feats = val_feats = None
        try:
            if cached:
                train_feats = self._encode_all(self.train_tok)
                val_feats = self._encode_all(self.val_tok)
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                self.head.train()
                if self.tuned:
                    self.model.train()
                order = torch.randperm(n_train, generator=self.generator).tolist()
                losses: list[tuple[float, int]] = []

                def step(index: Sequence[int], losses: list[tuple[float, int]] = losses) -> None:
                    optimizer.zero_grad(set_to_none=True)
                    if train_feats is not None:
                        feats = train_feats[list(index)].to(self.device)
                    else:
                        feats = self._features(self.train_tok.collate(index, self.device))
                    logits = self.head(feats).float()
                    loss = nn.functional.cross_entropy(
                        logits, self.train_y[list(index)].to(self.device)
                    )
                    loss.backward()
                    nn.utils.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], 1.0
                    )
                    optimizer.step()
                    self.trained_rows += len(index)
                    scheduler.step()
                    losses.append((loss.item(), len(index)))

                self._chunks(order, step)
                val_loss, pred = self._evaluate(val_feats)
                y = self.val_y.numpy()
                metrics = EpochMetrics(
                    epoch=epoch,
                    train_loss=sum(v * n for v, n in losses) / max(1, sum(n for _, n in losses)),
                    val_loss=val_loss,
                    val_accuracy=float(np.mean(pred == y)) if len(y) else 0.0,
                    val_macro_f1=macro_f1(y, pred, self.num_classes),
                    seconds=time.perf_counter() - t0,
                    head_learning_rate=optimizer.param_groups[0]["lr"],
                )
                history.append(metrics)
                log.debug(
                    "epoch %d: loss %.4f, val acc %.4f, val macro-F1 %.4f",
                    epoch,
                    metrics.train_loss,
                    metrics.val_accuracy,
                    metrics.val_macro_f1,
                )
                if self.on_epoch is not None:
                    self.on_epoch(metrics)
                if metrics.val_macro_f1 > best_f1:
                    best_f1, best_epoch, best_pred = metrics.val_macro_f1, epoch, pred
                    best_state = self._snapshot()
                elif cfg.patience and epoch - best_epoch >= cfg.patience:
                    message = (
                        f"Stopped early after epoch {epoch}: no better macro-F1 since {best_epoch}."
                    )
                    log.info(message)
                    break
        except _Cancelled:
            status = RunStatus.CANCELLED
            message = f"Cancelled after {len(history)} of {cfg.epochs} epochs."
            log.info(message)
        if best_state is not None:
            self._restore(best_state)
        self.head.eval()
        self.model.eval()
        return Run(
            config=cfg,
            head=self.head,
            encoder=self.encoder,
            encoder_changed=self.tuned,
            label_names=(),
            history=history,
            status=status,
            best_epoch=best_epoch,
            confusion=confusion_matrix(self.val_y.numpy(), best_pred, self.num_classes)
            if history
            else [],
            batch_size_used=self.batch_size,
            message=message,
        )

    def release(self) -> None:
        """Move the encoder and head to where the caller keeps the encoder; free GPU caches.

        The caller's encoder is left as it was found, and a run lives where its encoder came
        from: trained on the GPU from an encoder kept on the CPU, it holds no GPU memory
        afterwards (building a matrix moves what it needs to the device for the time it
        takes); from an encoder kept on the GPU (the app's), it stays there, ready for use.
        """
        self.model.to(self.home)
        self.head.to(self.home)
        _free_memory(self.device)

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


def lr_factor(seen: int, batch: int, total: int, warmup: int) -> float:
    """The learning-rate multiplier for the batch after ``seen`` of ``total`` training rows.

    Linear warm-up over the first ``warmup`` rows (its first batch gets batch/warmup of the
    rate), then linear decay to zero at ``total``. Counting rows rather than optimizer steps
    keeps the schedule the same length when the batch size changes mid-run.
    """
    ramp = min(1.0, (seen + batch) / warmup) if warmup > 0 else 1.0
    decay = max(0.0, (total - seen) / max(1, total - warmup)) if seen >= warmup else 1.0
    return min(ramp, decay)


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
    ``progress`` gets (rows done, rows total), counting every pass over a row (encoding, each
    epoch); ``cancel`` is checked before every batch; ``on_epoch`` gets each epoch's metrics
    as soon as they are known.
    """
    from embedgen.data import split

    config = config or FinetuneConfig()
    train, val = split(data, val_fraction=config.val_fraction, seed=config.seed)
    log.info("Fine-tuning on %d rows, validating on %d", len(train), len(val))
    trainer = _Trainer(encoder, train, val, config, progress, cancel, on_epoch)
    try:
        run = trainer.run()
    finally:
        trainer.release()
    summary = data.summary()
    summary.update({"rows_train": len(train), "rows_validation": len(val)})
    return replace(run, label_names=tuple(data.label_names), data_summary=summary)


def iter_batches(n: int, size: int) -> Iterator[range]:
    """Consecutive ranges of ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield range(start, min(n, start + size))
