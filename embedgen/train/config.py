"""What decides a fine-tuning run: the strategy and every setting, with its limits.

These fields are the one source of each default and limit: ``embedgen train``'s flags and the
Train page's widgets are made from them (``embedgen.fields``).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from embedgen.device import DeviceChoice
from embedgen.errors import BadConfig
from embedgen.fields import Choice, check, setting


class Strategy(Choice):
    """How much of the model trains."""

    HEAD = (
        "head",
        "Encoder frozen: the texts are encoded once and the features cached, then only the "
        "head trains, for many cheap epochs.",
    )
    TOP_K = "top-k", "The top k transformer layers train together with the head."
    FULL = (
        "full",
        "The whole encoder trains with the head, except the input embeddings unless asked.",
    )


class Pooling(Choice):
    """How a text's token states become one feature vector."""

    MEAN = "mean", "mean over real tokens: the space the contextual token vectors live in"
    CLS = "cls", "the first token's state"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides a fine-tuning run; written into run.json and every manifest."""

    strategy: Strategy = setting(
        Strategy.HEAD,
        "strategy",
        choices=Strategy,
        help=" ".join(f"{s}: {s.description}" for s in Strategy),
    )
    dim: int = setting(128, "projection size d", low=1, high=8192)
    epochs: int = setting(10, "epochs", low=1, high=10_000)
    batch_size: int = setting(
        32,
        "batch size",
        low=1,
        high=65_536,
        help="rows per optimizer step; under torchrun, the rows of all processes together",
    )
    learning_rate: float = setting(
        2e-5,
        "learning rate",
        low=0,
        high=1,
        low_open=True,
        flag="--lr",
        help="for the encoder layers that train (top-k, full)",
    )
    head_learning_rate: float = setting(
        5e-3, "head learning rate", low=0, high=10, low_open=True, flag="--head-lr"
    )
    weight_decay: float = setting(0.01, "weight decay", low=0, high=1)
    dropout: float = setting(0.1, "dropout", low=0, high=1, high_open=True)
    top_k: int = setting(2, "top-k layers", low=1, high=1000, help="layers that train for top-k")
    train_embeddings: bool = setting(
        False, "also tune the input embeddings", help="strategy full only"
    )
    pooling: Pooling = setting(
        Pooling.MEAN,
        "pooling",
        choices=Pooling,
        help=" ".join(f"{p}: {p.description}." for p in Pooling),
    )
    max_length: int | None = setting(
        None,
        "max length",
        low=8,
        high=8192,
        whole=True,
        help="tokens per text; default: from the data, its 95th percentile rounded up to a "
        "multiple of 8 (at most the model's positions)",
    )
    patience: int = setting(
        3,
        "patience",
        low=0,
        high=10_000,
        help="epochs without a better validation macro-F1 before stopping; 0 = never stop early",
    )
    val_fraction: float = setting(
        0.1,
        "validation fraction",
        low=0,
        high=0.5,
        low_open=True,
        help="share of each class held out to validate",
    )
    cache_features: bool = setting(
        True,
        "cache encoded features",
        negated_flag=True,
        flag="--no-cache-features",
        help="strategy head only: keep the encoded texts under $EMBEDGEN_HOME/cache/features, "
        "so a re-run on the same model, data, max length and pooling skips encoding "
        "(size limit: EMBEDGEN_FEATURE_CACHE_MB, default 2048)",
    )
    word_states: bool = setting(
        True,
        "keep word states for aggregated matrices",
        negated_flag=True,
        flag="--no-word-states",
        help="strategy head, with the feature cache: while reading the texts, also keep each "
        "word's vectors over its first 8 occurrences, so an aggregated matrix from the run "
        "over the same data need not read the texts again",
    )
    int8: bool = setting(
        False,
        "int8 encoder (CPU)",
        flag="--int8",
        help="strategy head on the CPU only: read the texts with an int8 copy of the encoder, "
        "about 2.5x faster; features differ slightly from fp32 (BENCHMARKS.md, CPU encoding)",
    )
    seed: int = setting(0, "seed", low=0, high=2**32 - 1, help="split, initialisation, order")
    device: DeviceChoice = setting(DeviceChoice.AUTO, "device", choices=DeviceChoice)

    def __post_init__(self) -> None:
        check(self)
        if self.int8 and self.strategy is not Strategy.HEAD:
            raise BadConfig(
                f"int8 reading is for the head strategy's frozen encoder; {self.strategy} "
                "trains encoder layers, which need full precision. Turn int8 off."
            )

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})
