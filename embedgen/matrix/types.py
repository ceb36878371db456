"""What a matrix is: its type, its methods, the options that build it, and how its layers are
read. No building here (``build``), no files (``folder``)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgen.device import DeviceChoice
from embedgen.errors import BadConfig
from embedgen.fields import Choice, check, choice, setting
from embedgen.models import Encoder
from embedgen.postprocess import PostProcess
from embedgen.train import Run, Strategy
from embedgen.words import TEMPLATES

# The label weight of a matrix from a run, unless told otherwise: the largest that kept at least
# 97% of the untuned word similarity on the choose set for both real models and both labelled
# files, confirmed on the others (BENCHMARKS.md, "The defaults' numbers").
DEFAULT_LABEL_WEIGHT = 0.1

# Tokens read per context of an aggregated row, unless told otherwise or a head run read more
# (then its max length, so that the run's word states serve: BENCHMARKS.md, "The data's word
# matrix").
DEFAULT_CONTEXT_TOKENS = 128


class Rows(enum.StrEnum):
    """What a matrix's rows are."""

    TOKENS = "tokens"  # the model's tokens
    WORDS = "words"  # words: a word list, a corpus's words


class Method(Choice):
    """How the matrix rows were made; recorded in every manifest."""

    INPUT = (
        "input",
        "The model's token-embedding matrix as it is; fine-tuning does not change it.",
    )
    PROJECTED = (
        "projected",
        "Each token's input embedding passed through the trained projection "
        "Linear(hidden -> d) of the fine-tuned head.",
    )
    CONTEXTUAL = (
        "contextual",
        "Each token (or word) run alone through the encoder (the tuned one when built from a "
        "run) and read at the chosen layer, a word's pieces averaged; from a run, then through "
        "the trained projection unless switched off.",
    )
    AGGREGATED = (
        "aggregated",
        "Each word read in context: its vectors averaged over its occurrences in your corpus "
        "and over a few generated sentences, at the chosen layer; from a run, through the "
        "trained projection unless switched off. Rows are words.",
    )

    @property
    def needs_run(self) -> bool:
        """Whether only a fine-tuning run (its trained projection) can build it."""
        return self is Method.PROJECTED

    @property
    def reads_context(self) -> bool:
        """Whether rows are read from the encoder's hidden states (at a layer or layers)."""
        return self in (Method.CONTEXTUAL, Method.AGGREGATED)

    @property
    def needs_words(self) -> bool:
        """Whether the rows must be words (a word list or a corpus's words)."""
        return self is Method.AGGREGATED

    @property
    def reflects_tuning(self) -> bool:
        """Whether a matrix built this way from a run carries what the training learned."""
        return self is not Method.INPUT


def methods_for(from_run: bool) -> list[Method]:
    """The methods that can be built from a run (all) or from a plain model."""
    return [m for m in Method if from_run or not m.needs_run]


def default_method(from_run: bool, word_rows: bool = False) -> Method:
    """Word rows: aggregated (the only method that reads whole words). Token rows from a run:
    the method that carries the tuning and gave sensible neighbours on a real model
    (contextual); from a plain model, the embedding table itself. The app and the CLI both
    start from this."""
    if word_rows:
        return Method.AGGREGATED
    return Method.CONTEXTUAL if from_run else Method.INPUT


@dataclass(frozen=True)
class EmbeddingMatrix:
    """Row ``i`` of ``vectors`` is the vector of ``vocab[i]``; ``manifest`` says how it was made."""

    vectors: npt.NDArray[np.float32]
    vocab: tuple[str, ...]
    manifest: dict[str, Any] = field(default_factory=dict)
    # Facts about each row, by column name (rows.tsv in the folder): e.g. for aggregated word
    # rows, how many corpus contexts a word was read in and what its vector is made of.
    columns: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {self.vectors.shape}")
        if self.vectors.shape[0] != len(self.vocab):
            raise ValueError(
                f"{self.vectors.shape[0]} rows but {len(self.vocab)} vocabulary entries"
            )
        for name, values in self.columns.items():
            if len(values) != len(self.vocab):
                raise ValueError(
                    f"column {name!r} has {len(values)} values for {len(self.vocab)} rows"
                )
        if self.manifest.get("method") is not None:  # an enum, also when read back from disk
            method = choice(Method, self.manifest["method"], "method")
            object.__setattr__(self, "manifest", {**self.manifest, "method": method})

    @property
    def mapped(self) -> bool:
        """Whether the vectors are mapped from a matrix.npy (``load_matrix(mapped=True)``)."""
        return isinstance(self.vectors, np.memmap)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, dims)."""
        return (int(self.vectors.shape[0]), int(self.vectors.shape[1]))

    @property
    def method(self) -> Method | None:
        """The method that made the matrix, or None for one made by hand."""
        return self.manifest.get("method")

    # -- what the manifest says, as typed properties -------------------------------------------
    @property
    def rows_are(self) -> Rows:
        """Whether the rows are the model's tokens or words."""
        return Rows(self.manifest.get("rows_are", Rows.TOKENS))

    @property
    def layers(self) -> tuple[int, int] | None:
        """The first and last layer the rows were read at (None: not read in context)."""
        layers = self.manifest.get("layers")
        return (int(layers[0]), int(layers[1])) if layers else None

    @property
    def reflects_tuning(self) -> bool:
        """Whether the rows carry what a run's training learned."""
        return bool(self.manifest.get("reflects_tuning"))

    @property
    def run_folder(self) -> str | None:
        """The folder of the run the matrix was built from; None for a plain model's."""
        folder = (self.manifest.get("run") or {}).get("folder")
        return str(folder) if folder else None

    @property
    def model_id(self) -> str:
        """The model the rows come from ("" for a matrix made by hand)."""
        return str((self.manifest.get("model") or {}).get("model_id", ""))

    @property
    def label_weight(self) -> float:
        """The weight of the run's label signal added to the rows (0: none)."""
        return float((self.manifest.get("label_signal") or {}).get("weight") or 0.0)

    @property
    def cjk_only(self) -> bool:
        """Whether only the model's CJK tokens were kept."""
        return bool((self.manifest.get("selection") or {}).get("cjk_only"))

    @property
    def postprocess_steps(self) -> list[str]:
        """The post-processing steps applied, in order ("center", "abtt", ...)."""
        return [str(step["step"]) for step in self.manifest.get("postprocess") or []]

    @property
    def dtype(self) -> str:
        """What matrix.npy holds (float32 unless saved as float16)."""
        return str(self.manifest.get("dtype", "float32"))

    @property
    def label(self) -> str:
        """What the matrix is, for people: "m3e-small · tuned · contextual · L4 · CJK · 17,134
        tokens" (the model by its folder's or hub id's last part: matrices of two models
        differed only by their layer)."""
        if self.method is None:
            return f"{self.shape[0]:,} rows"
        parts = [self.model_id.rstrip("/").rsplit("/", 1)[-1]] if self.model_id else []
        parts += ["tuned" if self.reflects_tuning else "untuned", str(self.method)]
        if self.layers:
            first, last = self.layers
            parts.append(f"L{first}" if first == last else f"L{first}-{last}")
        if self.label_weight:
            parts.append(f"labels × {self.label_weight:g}")
        if self.cjk_only and self.rows_are is Rows.TOKENS:
            parts.append("CJK")
        parts += self.postprocess_steps
        parts.append(f"{self.shape[0]:,} {self.rows_are}")
        return " · ".join(parts)


@dataclass(frozen=True)
class MatrixOptions:
    """Which rows to keep and how to build them."""

    method: Method = setting(
        Method.INPUT,
        "method",
        choices=Method,
        help=" ".join(f"{m}: {m.description}" for m in Method),
    )
    layer: int | None = setting(
        None,
        "layer",
        low=-1000,
        high=1000,
        whole=True,
        help="contextual: 0 = the embedding output, N = the last layer (the default); "
        "negative counts back from the last",
    )
    layers: str | None = setting(
        None,
        "layer range",
        text=True,
        help="contextual and aggregated: the mean of layers A to B, written A-B (e.g. 8-12); "
        "instead of --layer",
    )
    through_projection: bool = setting(
        True,
        "through the trained projection",
        flag="--no-projection",
        negated_flag=True,
        help="contextual from a run: pass the vectors through the projection",
    )
    drop_special: bool = setting(
        True,
        "drop special tokens",
        flag="--keep-special",
        negated_flag=True,
        help="[CLS], [SEP], [PAD], [MASK], [UNK] and [unusedN]",
    )
    cjk_only: bool = setting(
        False,
        "CJK tokens only",
        help="the Chinese tokens: CJK characters only, one row per text (no ##好 or ▁好 beside 好)",
    )
    drop_continuation: bool = setting(
        False, "drop ## pieces", help='"##x" pieces (their "x" twins stay)'
    )
    label_weight: float | None = setting(
        None,
        "label weight",
        low=0,
        high=100,
        help="contextual and aggregated from a run: keep the model's word similarity and add "
        f"the run's label signal as a few columns of this weight (default {DEFAULT_LABEL_WEIGHT:g}"
        ", chosen to keep its word similarity; 0: the tuned projection only, which trades word "
        "similarity for labels); see the trade-off on the Evaluate page",
    )
    corpus_contexts: int = setting(
        2,
        "corpus contexts per word",
        low=0,
        high=10_000,
        help="aggregated: up to this many of a word's occurrences in the corpus",
    )
    context_chars: int = setting(
        32,
        "corpus context window (characters)",
        low=0,
        high=100_000,
        help="aggregated: read a word's corpus occurrence in the piece of its text around it, "
        "at most this many characters, cut between sentences or words (0: the whole text, "
        "up to the context length)",
    )
    generated_contexts: int = setting(
        4,
        "generated contexts per word",
        low=0,
        high=len(TEMPLATES),
        help="aggregated: short neutral sentences each word is also read in, so that words "
        "the corpus lacks get vectors that compare with the others'",
    )
    generated_in_corpus: int = setting(
        2,
        "generated contexts, words in the corpus",
        low=0,
        high=len(TEMPLATES),
        help="aggregated: the words the corpus holds are read in this many of the generated "
        "sentences (at most the generated contexts per word), the others in all of them",
    )
    context_tokens: int | None = setting(
        None,
        "context length",
        low=8,
        high=8192,
        whole=True,
        help=f"aggregated: tokens read per context (default {DEFAULT_CONTEXT_TOKENS}, or a head "
        "run's max length when longer, so that the words its encoding pass kept serve)",
    )
    postprocess: PostProcess = field(default_factory=PostProcess)
    batch_size: int = setting(256, "batch size", low=1, high=65_536)
    device: DeviceChoice = setting(DeviceChoice.AUTO, "device", choices=DeviceChoice)

    def __post_init__(self) -> None:
        check(self)
        if self.layers is not None and not _LAYERS.fullmatch(self.layers.strip()):
            raise BadConfig(
                f"layer range {self.layers!r} is not A-B (e.g. 8-12) or one layer number."
            )
        if self.method is Method.AGGREGATED and not (
            self.corpus_contexts or self.generated_contexts
        ):
            raise BadConfig(
                "aggregated needs contexts: give corpus contexts per word or generated contexts "
                "per word above 0."
            )

    def for_source(self, run: Run | None) -> MatrixOptions:
        """These options with the source's defaults filled in (``run`` None: a plain model):
        a label weight not given is :data:`DEFAULT_LABEL_WEIGHT` for contextual and aggregated
        rows from a run, else 0; a context length not given is :data:`DEFAULT_CONTEXT_TOKENS`,
        or a head run's max length when longer (its word states hold contexts that long)."""
        weight, tokens = self.label_weight, self.context_tokens
        if weight is None:
            weight = DEFAULT_LABEL_WEIGHT if run is not None and self.method.reads_context else 0.0
        if tokens is None:
            tokens = DEFAULT_CONTEXT_TOKENS
            if run is not None and run.config.strategy is Strategy.HEAD:
                tokens = max(tokens, run.config.max_length or 0)
        return replace(self, label_weight=weight, context_tokens=tokens)

    @property
    def reads_corpus(self) -> bool:
        """Whether the rows are read in a corpus's texts (aggregated with corpus contexts);
        otherwise a corpus only counts the words and names the rows."""
        return self.method is Method.AGGREGATED and self.corpus_contexts > 0

    @property
    def needs_corpus(self) -> bool:
        """Whether a corpus is read at all: not by aggregated with no corpus contexts (its
        words are read in generated sentences only)."""
        return not (self.method is Method.AGGREGATED and self.corpus_contexts == 0)


_LAYERS = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")


def resolve_layers(
    options: MatrixOptions, num_layers: int, model_id: str = "the model"
) -> tuple[int, int]:
    """The first and last layer a contextual row averages: ``layers`` ("8-12") when given, else
    ``layer`` (None: the last) on its own."""
    if options.layers is None:
        layer = resolve_layer(options.layer, num_layers, model_id)
        return layer, layer
    match = _LAYERS.fullmatch(options.layers.strip())
    assert match is not None  # checked in MatrixOptions
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if first > last:
        first, last = last, first
    return resolve_layer(first, num_layers, model_id), resolve_layer(last, num_layers, model_id)


def resolve_layer(layer: int | None, num_layers: int, model_id: str = "the model") -> int:
    """The layer ``layer`` means for a model with ``num_layers``: None is the last, -1 too."""
    chosen = num_layers if layer is None else layer
    if chosen < 0:
        chosen += num_layers + 1
    if not 0 <= chosen <= num_layers:
        raise BadConfig(
            f"Layer {layer} does not exist: {model_id} has layers 0 (embeddings) to {num_layers}."
        )
    return chosen


def reflects_run(options: MatrixOptions, run: Run | None) -> bool:
    """Whether a matrix built by ``options`` from ``run`` carries what its training learned:
    ``projected``; ``contextual`` and ``aggregated`` through the projection or from a tuned
    encoder."""
    if run is None:
        return False
    options = options.for_source(run)
    if options.method.reads_context:
        return bool(options.through_projection or run.encoder_changed or options.label_weight)
    return options.method.reflects_tuning


def split_source(source: Encoder | Run) -> tuple[Run | None, Encoder]:
    """The run (None for a plain model) and the encoder that builds the rows."""
    if isinstance(source, Run):
        return source, source.encoder
    return None, source
