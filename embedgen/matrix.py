"""The embedding matrix: what it is, how each method builds it, and its folder on disk.

Methods (:class:`Method`), each named in the manifest:

- ``input``: the model's token-embedding table as it is (the baseline; fine-tuning never
  changes it).
- ``projected``: each token's input vector through the run's trained projection (vocab x d).
- ``contextual``: each token run alone through the (possibly tuned) encoder and read at a
  layer; from a run, then through the projection unless switched off.

The matrix folder (:func:`save_matrix` / :func:`load_matrix`) is what this project reads back::

    matrix.npy      float32 (or float16) rows x dims
    vocab.txt       UTF-8, "\\n" line ends, line i is the token of row i
    manifest.json   how the matrix was made, plus rows, dims, dtype, vocab escaping, sha256s
    cache.json      only in a matrix built from a plain model into its default folder: it can be
                    built again, so it belongs to the :class:`MatrixCache`, kept within the
                    operator's ``matrix_cache_mb``; the file's time is the matrix's last use

If any token holds a line break (``\\n``, ``\\r`` or another character that ``str.splitlines``
breaks on), the whole of vocab.txt is escaped: ``\\`` -> ``\\\\``, ``\\n`` -> ``\\n``, ``\\r`` ->
``\\r``, other breaks -> ``\\uXXXX``; the manifest then says ``"vocab_escaping": "backslash"``
and ``"escaped_tokens"`` counts those tokens. Otherwise (the usual case) tokens are written as
they are and ``"vocab_escaping": "none"``. Every file is written under a temporary name and
renamed into place (``embedgen.atomic``); the manifest is written last.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from embedgen import __version__
from embedgen.atomic import (
    TEMP_PREFIX,
    atomic_folder,
    atomic_path,
    sha256_file,
    write_bytes,
    write_json,
)
from embedgen.blend import SHRINK, blend, label_signal, logits
from embedgen.budget import MIB, Entry, evict, folder_size, human_size, remove, touch
from embedgen.cells import spreadsheet_cell
from embedgen.device import DeviceChoice, resolve_device
from embedgen.errors import BadConfig, BadRun, NotKept
from embedgen.fields import Choice, check, choice, setting
from embedgen.models import Encoder
from embedgen.paths import embedgen_home, matrix_folder, matrix_name, slug
from embedgen.postprocess import PostProcess
from embedgen.postprocess import apply as apply_postprocess
from embedgen.progress import ProgressFn
from embedgen.settings import operator_settings
from embedgen.states import Inputs, evaluating, on_device, out_dims, read_states
from embedgen.tokens import describe_removed, select_tokens, special_frame
from embedgen.train import Head, Run
from embedgen.train.batches import iter_batches
from embedgen.words import (
    TEMPLATES,
    Corpus,
    WordVocab,
    context_vectors,
    corpus_contexts,
    count_in,
    pooled_rows,
    whole_word_vectors,
    words_from_corpus,
    words_from_list,
)
from embedgen.wordstates import WordStates, generated_vectors, kept_states

log = logging.getLogger(__name__)

MATRIX_FILE = "matrix.npy"
VOCAB_FILE = "vocab.txt"
MANIFEST_FILE = "manifest.json"
ROWS_FILE = "rows.tsv"  # facts about each row, when the matrix has any (EmbeddingMatrix.columns)
CACHE_FILE = "cache.json"  # in a rebuildable matrix's folder; its time is the matrix's last use
DTYPES = ("float32", "float16")  # what matrix.npy may hold


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


def default_method(from_run: bool) -> Method:
    """From a run, the method that carries the tuning and gave sensible neighbours on a real
    model (contextual); from a plain model, the embedding table itself."""
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
    def shape(self) -> tuple[int, int]:
        """(rows, dims)."""
        return (int(self.vectors.shape[0]), int(self.vectors.shape[1]))

    @property
    def method(self) -> Method | None:
        """The method that made the matrix, or None for one made by hand."""
        return self.manifest.get("method")

    @property
    def label(self) -> str:
        """What the matrix is, for people: "tuned · contextual · L12 · CJK · 17,134 tokens"."""
        m = self.manifest
        if m.get("method") is None:
            return f"{self.shape[0]:,} rows"
        parts = ["tuned" if m.get("reflects_tuning") else "untuned", str(m["method"])]
        layers = m.get("layers")
        if layers:
            first, last = layers
            parts.append(f"L{first}" if first == last else f"L{first}-{last}")
        weight = (m.get("label_signal") or {}).get("weight")
        if weight:
            parts.append(f"labels × {weight:g}")
        if (m.get("selection") or {}).get("cjk_only") and m.get("rows_are") != "words":
            parts.append("CJK")
        parts += [str(step["step"]) for step in m.get("postprocess") or []]
        parts.append(f"{self.shape[0]:,} {m.get('rows_are', 'rows')}")
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
    cjk_only: bool = setting(False, "CJK tokens only", help="tokens made of CJK characters only")
    drop_continuation: bool = setting(
        False, "drop ## pieces", help='"##x" pieces (their "x" twins stay)'
    )
    label_weight: float = setting(
        0.0,
        "label weight",
        low=0,
        high=100,
        help="contextual and aggregated from a run: keep the untuned geometry and add the "
        "run's label signal as a few columns of this weight (0: off; 0.5 is a good start); "
        "see the trade-off on the Evaluate page",
    )
    corpus_contexts: int = setting(
        8,
        "corpus contexts per word",
        low=0,
        high=10_000,
        help="aggregated: up to this many of a word's occurrences in the corpus",
    )
    generated_contexts: int = setting(
        4,
        "generated contexts per word",
        low=0,
        high=len(TEMPLATES),
        help="aggregated: short neutral sentences each word is also read in, so that words "
        "the corpus lacks get vectors that compare with the others'",
    )
    context_tokens: int = setting(
        128, "context length", low=8, high=8192, help="aggregated: tokens read per context"
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
    if options.method.reads_context:
        return options.through_projection or run.encoder_changed or options.label_weight > 0
    return options.method.reflects_tuning


def _split(source: Encoder | Run) -> tuple[Run | None, Encoder]:
    """The run (None for a plain model) and the encoder that builds the rows."""
    if isinstance(source, Run):
        return source, source.encoder
    return None, source


def name_for(
    source: Encoder | Run,
    options: MatrixOptions,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
) -> str:
    """The matrix's name by the one naming rule (``embedgen.paths.matrix_name``)."""
    run, encoder = _split(source)
    info = encoder.info
    layers = None
    if options.method.reads_context:
        layers = resolve_layers(options, info.num_layers, info.model_id)
    tuned = reflects_run(options, run)
    return matrix_name(options, tuned=tuned, layers=layers, words=_rows_label(words, corpus))


def _rows_label(words: WordVocab | None, corpus: Corpus | None) -> str | None:
    """``words-<list or corpus>`` (``-in-<corpus>`` when read in another), or None for tokens."""
    if words is None and corpus is None:
        return None
    vocab = None
    if words is not None:
        vocab = words.record.get("list") or words.record.get("corpus", {}).get("name")
    if vocab is None and corpus is not None:
        vocab = corpus.name
    label = f"words-{slug(Path(vocab or 'words').stem)}"
    if corpus is not None and vocab != corpus.name:
        label += f"-in-{slug(Path(corpus.name).stem)}"
    return label


def folder_for(
    source: Encoder | Run,
    options: MatrixOptions,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
) -> Path:
    """Where the matrix goes unless told otherwise: its run's ``matrices/<name>``, or
    ``$EMBEDGEN_HOME/matrices/<model>/<name>`` for a plain model."""
    run, encoder = _split(source)
    return matrix_folder(
        name_for(source, options, words=words, corpus=corpus),
        run_folder=run.folder if run is not None else None,
        model_id=encoder.info.model_id,
    )


# --------------------------------------------------------------------------------------------
# Building a matrix
# --------------------------------------------------------------------------------------------


def build_matrix(
    source: Encoder | Run,
    options: MatrixOptions | None = None,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> EmbeddingMatrix:
    """Build the embedding matrix of ``source`` (a model, or a fine-tuning run) by ``options``.

    Rows are the model's tokens (filtered by ``options``), or ``words`` when given. ``input``
    needs only a model; ``projected`` needs a run; ``contextual`` and ``aggregated`` use the
    run's (possibly tuned) encoder and, unless ``through_projection`` is off, its projection.
    ``aggregated`` reads words in ``corpus`` (and in generated sentences); with no word list
    its rows are the corpus's words.
    """
    options = options or MatrixOptions()
    run, encoder = _split(source)
    _check_can_build(options, run, words, corpus)
    if words is None and options.method.needs_words:
        assert corpus is not None  # checked above
        words = words_from_corpus(corpus)
    head = run.head if run is not None else None
    projection = _projection_for(options, head)
    if words is None:
        vectors, vocab, rows = _token_rows(encoder, projection, options, progress, cancel)
        columns: dict[str, tuple[Any, ...]] = {}
    else:
        vectors, columns, rows = _word_rows(
            encoder, projection, words, corpus, options, progress, cancel, run=run
        )
        vocab = words.words
    if options.label_weight:
        assert head is not None  # checked above
        label = label_signal(logits(head, vectors))
        vectors = blend(vectors, label, options.label_weight)
        rows["label_signal"] = {
            "weight": options.label_weight,
            "shrink": SHRINK,
            "classes": int(label.shape[1]),
            "columns": f"{vectors.shape[1] - label.shape[1]} untuned (centred, unit) + "
            f"{label.shape[1]} label",
        }
    vectors, steps = apply_postprocess(vectors, options.postprocess)
    log.info("Built %s matrix: %d rows x %d dims", options.method, *vectors.shape)
    return EmbeddingMatrix(
        vectors=np.ascontiguousarray(vectors),
        vocab=tuple(vocab),
        manifest=_manifest(encoder, run, options, rows, steps, vectors.shape),
        columns=columns,
    )


def _projection_for(options: MatrixOptions, head: Head | None) -> Head | None:
    """The trained projection the rows pass through, or None."""
    if options.method is Method.INPUT or options.label_weight:
        return None  # label-weighted rows start from the raw states (blend.py)
    if options.method.needs_run:
        return head
    return head if options.through_projection else None


@dataclass(frozen=True)
class BuildEstimate:
    """How long building a matrix will take: measured on ``sample`` rows, scaled to ``rows``."""

    rows: int
    seconds: float
    sample: int
    sample_seconds: float

    def describe(self) -> str:
        """ "about 25 s for 17,134 rows (measured on 256 rows)"."""
        seconds = self.seconds
        if seconds < 1:
            took = "under a second"
        elif seconds < 90:
            took = f"about {seconds:.0f} s"
        elif seconds < 5400:
            took = f"about {seconds / 60:.0f} min"
        else:
            took = f"about {seconds / 3600:.1f} h"
        how = f" (measured on {self.sample:,} rows)" if self.sample else ""
        return f"{took} for {self.rows:,} rows{how}"


def estimate_build(
    source: Encoder | Run,
    options: MatrixOptions | None = None,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    sample: int = 128,
) -> BuildEstimate:
    """How long :func:`build_matrix` will take with these arguments, from a quick sample.

    Rows that are read through the encoder (``contextual``, ``aggregated``) are timed on
    ``sample`` rows spread over the vocabulary (two sizes, so the fixed cost of a build is not
    multiplied by the number of rows); table rows (``input``, ``projected``) cost almost
    nothing. Takes about a second on a CPU for the default matrix of a small model.
    """
    options = options or MatrixOptions()
    run, encoder = _split(source)
    if words is None and options.method.needs_words and corpus is not None:
        words = words_from_corpus(corpus)
    if words is None:
        ids, _ = _selected_tokens(encoder, options)
        rows = len(ids)
    else:
        rows = len(words)
    if not options.method.reads_context or rows == 0:
        return BuildEstimate(rows=rows, seconds=0.0, sample=0, sample_seconds=0.0)
    head = _projection_for(options, run.head if run is not None else None)
    small = max(1, min(rows, sample) // 4)
    large = max(small + 1, min(rows, sample))
    if large > rows:  # a tiny vocabulary: measuring it is building it
        large = small = rows

    def timed(n: int) -> float:
        step = max(1, rows // n)
        if words is None:
            picked_ids = ids[::step][:n]
            info = encoder.info
            layers = resolve_layers(options, info.num_layers, info.model_id)
            started = time.perf_counter()
            _contextual_rows(encoder, head, picked_ids, layers, options, None, None)
        else:
            picked = words_from_list(list(words.words[::step][:n]), name="sample")
            started = time.perf_counter()
            # Without the generated-context cache: the sample would fill it, and time it.
            _word_rows(encoder, head, picked, corpus, options, None, None, run=run, use_cache=False)
        return time.perf_counter() - started

    timed(small)  # warm-up: the first batch of a process pays for thread pools and kernels
    t_small = timed(small)
    if large == small:
        return BuildEstimate(rows=rows, seconds=t_small, sample=rows, sample_seconds=t_small)
    t_large = timed(large)
    # The slope between the two sizes, but at least a quarter of the large sample's mean (so
    # timing noise cannot make rows look free).
    per_row = max((t_large - t_small) / (large - small), t_large / large / 4)
    fixed = max(0.0, t_large - per_row * large)
    return BuildEstimate(
        rows=rows, seconds=fixed + per_row * rows, sample=large, sample_seconds=t_large
    )


def _check_can_build(
    options: MatrixOptions, run: Run | None, words: WordVocab | None, corpus: Corpus | None
) -> None:
    if options.label_weight and (run is None or not options.method.reads_context):
        raise BadConfig(
            "A label weight adds the run's label signal to contextual or aggregated rows: "
            "build from a run with one of those methods, or set the label weight to 0."
        )
    if options.method.needs_run and run is None:
        raise BadConfig(
            f"The '{options.method}' method needs a fine-tuning run (it uses the trained "
            "projection). Train first, or choose "
            + " or ".join(f"'{m}'" for m in methods_for(from_run=False))
            + "."
        )
    if options.method.needs_words and words is None and corpus is None:
        raise BadConfig(
            f"The '{options.method}' method reads words in context: give a corpus (a file of "
            "texts and its text column), a word list, or both."
        )
    if options.method is Method.AGGREGATED and options.generated_contexts == 0 and not corpus:
        raise BadConfig(
            "aggregated with no generated contexts needs a corpus to read the words in."
        )


def _token_rows(
    encoder: Encoder,
    head: Head | None,
    options: MatrixOptions,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Rows for the model's tokens (filtered), the tokens, and a record of the rows."""
    ids, removed = _selected_tokens(encoder, options)
    log.info("Token rows: %d kept (%s removed)", len(ids), describe_removed(removed))
    record: dict[str, Any] = {"rows_are": "tokens", "removed": removed}
    if options.method.reads_context:
        info = encoder.info
        layers = resolve_layers(options, info.num_layers, info.model_id)
        record["layers"] = list(layers)
        vectors = _contextual_rows(encoder, head, ids, layers, options, progress, cancel)
    else:
        vectors = _embedding_rows(encoder, head, ids)
        if progress is not None:
            progress(1, 1)
    return vectors, encoder.tokenizer.convert_ids_to_tokens(ids), record


def _selected_tokens(encoder: Encoder, options: MatrixOptions) -> tuple[list[int], Any]:
    """The ids of the tokens that become rows by ``options``' filters, and what was removed."""
    return select_tokens(
        encoder.tokenizer,
        encoder.info.vocab_size,
        drop_special=options.drop_special,
        cjk_only=options.cjk_only,
        drop_continuation=options.drop_continuation,
    )


def _word_rows(
    encoder: Encoder,
    head: Head | None,
    words: WordVocab,
    corpus: Corpus | None,
    options: MatrixOptions,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
    *,
    run: Run | None = None,
    use_cache: bool = True,
) -> tuple[np.ndarray, dict[str, tuple[Any, ...]], dict[str, Any]]:
    """Rows for ``words`` by the method, the per-row columns (rows.tsv) and a record;
    ``aggregated`` takes the word states ``run`` kept of ``corpus`` where it can, and (with
    ``use_cache``) the cached generated contexts of words read before."""
    if corpus is not None and words.record.get("source") != "corpus":
        words = count_in(words, corpus)
    record: dict[str, Any] = {"rows_are": "words", "vocabulary": words.record}
    if corpus is not None:
        record["corpus"] = corpus.record()
    columns: dict[str, tuple[Any, ...]] = {}
    if words.record.get("source") == "corpus" or corpus is not None:
        columns["corpus_count"] = words.counts
    if not options.method.reads_context:
        if progress is not None:
            progress(0, 1)
        vectors = pooled_rows(encoder, words.words, head)
        if progress is not None:
            progress(1, 1)
        return vectors, columns, record
    info = encoder.info
    layers = resolve_layers(options, info.num_layers, info.model_id)
    record["layers"] = list(layers)
    device = resolve_device(options.device)
    with on_device([encoder.model, head], device), evaluating(encoder.model):
        if options.method is Method.CONTEXTUAL:
            vectors = whole_word_vectors(
                encoder,
                words.words,
                layers,
                device=device,
                head=head,
                batch_size=options.batch_size,
                progress=progress,
                cancel=cancel,
            )
            return vectors, columns, record
        shared = (
            kept_states(
                run,
                encoder,
                corpus,
                corpus_contexts=options.corpus_contexts,
                context_tokens=options.context_tokens,
                layers=layers,
                device=device,
            )
            if run is not None and corpus is not None
            else None
        )
        vectors, read, reused = _aggregated(
            encoder,
            head,
            words,
            corpus,
            layers,
            options,
            device,
            progress,
            cancel,
            shared,
            use_cache,
        )
    columns.update(read)
    record["contexts"] = {
        "corpus_per_word": options.corpus_contexts if corpus is not None else 0,
        "generated_per_word": options.generated_contexts,
        "words_read_in_corpus": int(sum(1 for n in read["corpus_contexts"] if n)),
        "words_read_alone": int(sum(1 for s in read["vector"] if s == "word alone")),
    }
    record["contexts"].update(reused)
    return vectors, columns, record


def _aggregated(
    encoder: Encoder,
    head: Head | None,
    words: WordVocab,
    corpus: Corpus | None,
    layers: tuple[int, int],
    options: MatrixOptions,
    device: torch.device,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
    shared: WordStates | None = None,
    use_cache: bool = True,
) -> tuple[np.ndarray, dict[str, tuple[Any, ...]], dict[str, Any]]:
    """``aggregated`` rows: the mean over a word's corpus contexts averaged with the mean over
    its generated ones (either alone when the other is missing; the word alone when both are),
    per row how many corpus contexts it read and what its vector is made of, and what was
    reused: corpus contexts from the word states a run kept (``shared``), words whose
    generated contexts were cached (with ``use_cache``)."""
    n = len(words)
    reading_corpus = corpus is not None and options.corpus_contexts > 0
    stages = int(reading_corpus) + int(options.generated_contexts > 0) + 1
    means, counts = [], []
    reused: dict[str, Any] = {}
    if reading_corpus:
        assert corpus is not None
        contexts = corpus_contexts(words.words, corpus, per_word=options.corpus_contexts)
        kept = None
        if shared is not None:
            kept, contexts = shared.split(words.words, contexts, corpus)
            reused["from_run"] = {"contexts": int(kept[1].sum()), "read_again": len(contexts)}
            log.info(
                "Aggregated: %d corpus contexts from the run's word states, %d read again",
                reused["from_run"]["contexts"],
                len(contexts),
            )
        mean, used = context_vectors(
            encoder,
            contexts,
            n,
            layers,
            device=device,
            head=head,
            max_tokens=options.context_tokens,
            progress=_stage(progress, 0, stages),
            cancel=cancel,
        )
        if kept is not None:
            mean, used = _with_kept(mean, used, kept, head, device)
        means.append(mean)
        counts.append(used)
    if options.generated_contexts:
        mean, used, cached = generated_vectors(
            encoder,
            words.words,
            options.generated_contexts,
            layers,
            device=device,
            head=head,
            context_tokens=options.context_tokens,
            progress=_stage(progress, len(means), stages),
            cancel=cancel,
            cache=use_cache,
        )
        reused["generated_cached"] = cached
        means.append(mean)
        counts.append(used)
    have = np.stack([c > 0 for c in counts])  # passes x rows
    stacked = np.stack([np.nan_to_num(m) for m in means])
    vectors = (stacked * have[:, :, None]).sum(0) / np.maximum(have.sum(0), 1)[:, None]
    alone = ~have.any(0)
    if alone.any():  # no context at all: the word alone, marked
        vectors[alone] = whole_word_vectors(
            encoder,
            [w for w, a in zip(words.words, alone, strict=True) if a],
            layers,
            device=device,
            head=head,
            batch_size=options.batch_size,
            progress=_stage(progress, len(means), stages),
            cancel=cancel,
        )
    in_corpus = counts[0] if reading_corpus else np.zeros(n, int)
    generated = options.generated_contexts > 0
    made_of = [
        "word alone"
        if alone[i]
        else "corpus + generated"
        if c and generated
        else "corpus"
        if c
        else "generated"
        for i, c in enumerate(in_corpus.tolist())
    ]
    if progress is not None:
        progress(1, 1)
    return (
        vectors.astype(np.float32),
        {"corpus_contexts": tuple(int(c) for c in in_corpus), "vector": tuple(made_of)},
        reused,
    )


def kept_note(manifest: dict[str, Any]) -> str | None:
    """For people, what an aggregated matrix reused: corpus contexts from a run's word states
    (and how many were read again), generated contexts from the cache; None if nothing."""
    contexts = manifest.get("contexts") or {}
    notes = []
    if shared := contexts.get("from_run"):
        notes.append(
            f"{shared['contexts']:,} corpus contexts taken from the run's encoding pass, "
            f"{shared['read_again']:,} read again"
        )
    if cached := contexts.get("generated_cached"):
        notes.append(f"generated contexts of {cached:,} words from the cache")
    return " · ".join(notes) or None


def _with_kept(
    mean: np.ndarray,
    used: np.ndarray,
    kept: tuple[np.ndarray, np.ndarray],
    head: Head | None,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean over both the contexts just read (``mean`` of ``used`` each) and the kept sums
    (raw states, ``kept`` = (sums, counts)), through ``head``'s projection when given: the
    projection is affine, so the mean of projected vectors is the projected mean."""
    sums, counts = kept
    have = counts > 0
    kept_mean = np.zeros_like(mean)
    if have.any():
        raw = sums[have] / counts[have, None]
        if head is not None:
            with torch.no_grad():
                raw = head.project(torch.from_numpy(raw).float().to(device)).float().cpu().numpy()
        kept_mean[have] = raw
    total = used + counts
    both = np.nan_to_num(mean) * used[:, None] + kept_mean * counts[:, None]
    out = np.full_like(mean, np.nan)
    seen = total > 0
    out[seen] = (both[seen] / total[seen, None]).astype(np.float32)
    return out, total


def _stage(progress: ProgressFn | None, k: int, stages: int) -> ProgressFn | None:
    """Progress of stage ``k`` of ``stages`` as a share of the whole (in thousandths)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(int(1000 * (k + done / max(total, 1)) / stages), 1000)

    return report


def _embedding_rows(encoder: Encoder, head: Head | None, ids: list[int]) -> np.ndarray:
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


def _contextual_rows(
    encoder: Encoder,
    head: Head | None,
    ids: list[int],
    layers: tuple[int, int],
    options: MatrixOptions,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> np.ndarray:
    """Each token alone in its special-token frame ([CLS] x [SEP]) through the encoder, read at
    ``layers`` (the mean of a range), through ``head``'s projection when given; batches of
    ``options.batch_size``."""
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
        list(iter_batches(len(ids), options.batch_size)),
        layers,
        inputs=inputs,
        pick=lambda ready, states: (ready.batch, states[:, pos]),
        take=take,
        device=resolve_device(options.device),
        head=head,
        progress=progress,
        cancel=cancel,
        what="Matrix building",
    )
    return out


def _manifest(
    encoder: Encoder,
    run: Run | None,
    options: MatrixOptions,
    rows: dict[str, Any],
    steps: list[dict[str, Any]],
    shape: tuple[int, ...],
) -> dict[str, Any]:
    """What a matrix records about how it was made."""
    from embedgen.runs import run_manifest

    projected = options.method.needs_run or (
        options.method.reads_context
        and run is not None
        and options.through_projection
        and not options.label_weight
    )
    layers = rows.pop("layers", None)
    manifest: dict[str, Any] = {
        "method": options.method,
        "method_description": options.method.description,
        "layer": layers[0] if layers and layers[0] == layers[1] else None,
        "layers": layers,
        "through_projection": bool(projected),
        "reflects_tuning": reflects_run(options, run),
        "rows": int(shape[0]),
        "dims": int(shape[1]),
        "rows_are": rows.pop("rows_are"),
        "selection": {
            "drop_special": options.drop_special,
            "cjk_only": options.cjk_only,
            "drop_continuation": options.drop_continuation,
            "removed": rows.pop("removed", None),
        },
        "postprocess": steps,
        "model": encoder.info.as_dict(),
        "run": run_manifest(run) if run is not None else None,
        "embedgen_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    manifest.update(rows)  # vocabulary, corpus, contexts for word rows
    if options.method is Method.AGGREGATED:
        manifest["context_tokens"] = options.context_tokens
    return manifest


# --------------------------------------------------------------------------------------------
# The matrix folder
# --------------------------------------------------------------------------------------------

# Every character str.splitlines() breaks on; any of them in vocab.txt would shift the rows.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_UNESCAPE = re.compile(r"\\(\\|n|r|u[0-9a-fA-F]{4})")


def save_matrix(
    matrix: EmbeddingMatrix,
    folder: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    rebuildable: bool = False,
) -> Path:
    """Write ``matrix`` as a matrix folder (matrix.npy, vocab.txt, manifest.json); return it.

    ``dtype`` "float16" halves the file (about 3 significant digits survive); ``load_matrix``
    turns it back into float32. The manifest is written last, so a folder with a manifest is
    complete.

    ``rebuildable``: the matrix was built from a plain model into its default folder
    (:func:`folder_for`, under ``$EMBEDGEN_HOME/matrices``), so it can be built again. It joins
    the :class:`MatrixCache`, whose least recently used matrices are then removed to keep it
    within the operator's ``matrix_cache_mb``; one bigger than that whole budget is not saved
    (:class:`NotKept`, nothing else removed). Without it (a run's matrix, a folder the user
    named) the matrix is the user's and never removed.
    """
    if dtype not in DTYPES:
        raise BadConfig(f"dtype {dtype!r} is not supported for matrix.npy; choose one of {DTYPES}.")
    final = Path(folder)
    cache = MatrixCache() if rebuildable else None
    if cache is not None:
        if not cache.holds(final):
            raise ValueError(f"{final} is not a folder of the matrix cache ({cache.root}/*/*)")
        at_least = matrix.vectors.size * np.dtype(dtype).itemsize
        if at_least > cache.budget:
            raise NotKept(_not_kept(final, at_least, cache.budget))
    with using(final), atomic_folder(final) as out:
        if cache is not None:
            write_json(out / CACHE_FILE, _CACHE_NOTE)
        _write_matrix_files(matrix, out, dtype)
    log.info("Saved a %d x %d %s matrix to %s", *matrix.shape, dtype, final)
    if cache is not None:
        size = folder_size(final)
        if size > cache.budget:  # vocab.txt and the manifest tipped it over
            remove(Entry(final, (final,), size, 0.0))
            raise NotKept(_not_kept(final, size, cache.budget))
        cache.make_room(keep=final)
    return final


_CACHE_NOTE = {
    "rebuildable": True,
    "note": "Built from a plain model, so it can be built again: embedgen removes it, least "
    "recently used first (this file's time), when the matrices built from models outgrow the "
    "operator's matrix_cache_mb. Delete this file to keep the matrix for good.",
}


def _not_kept(folder: Path, size: int, budget: int) -> str:
    name = _matrix_name(folder)
    if budget <= 0:
        return (
            f"The matrix '{name}' is not saved: the operator of this server keeps no matrices "
            "built from a model (matrix_cache_mb is 0)."
        )
    return (
        f"The matrix '{name}' takes {human_size(size)}, more than the {budget / MIB:,.4g} MiB "
        "the operator of this server gives to matrices built from a model (matrix_cache_mb), "
        "so it is not saved."
    )


def matrix_budget_bytes() -> int:
    """The matrix cache's size limit in bytes: the operator's ``matrix_cache_mb``."""
    return int(operator_settings().matrix_cache_mb * MIB)


class MatrixCache:
    """Matrices built from a plain model, in the ``matrices/`` folders under ``root`` (default
    ``$EMBEDGEN_HOME``), at most ``budget`` bytes in all (default :func:`matrix_budget_bytes`;
    0 keeps none).

    Its entries are the folders ``<matrices>/<model>/<name>`` that hold ``cache.json``, written
    by ``save_matrix(..., rebuildable=True)``, where ``<matrices>`` is ``root/matrices`` or a
    workspace's, two levels down (``root/users/<user>/matrices``): one budget for the disk they
    share. The file's time is the matrix's last use (saved, or loaded by :func:`load_matrix`).
    A matrix saved there any other way is not the cache's: never counted, never removed.
    Entries are removed only when one is saved, never the one saved nor one being read or
    written in this process (:func:`using`).
    """

    PLACES = ("matrices/*/*", "*/*/matrices/*/*")  # <matrices>/<model>/<name>, under root

    def __init__(self, root: str | os.PathLike[str] | None = None, budget: int | None = None):
        self.root = Path(root) if root is not None else embedgen_home()
        self.budget = matrix_budget_bytes() if budget is None else budget

    def holds(self, folder: str | os.PathLike[str]) -> bool:
        """Whether ``folder`` is a place for one of the cache's matrices."""
        path, root = Path(folder).resolve(), self.root.resolve()
        if not path.is_relative_to(root):
            return False
        inside = path.relative_to(root)
        return any(  # match() anchors at the right; the same length anchors the left too
            len(inside.parts) == len(Path(place).parts) and inside.match(place)
            for place in self.PLACES
        )

    def entries(self) -> list[Entry]:
        """The cached matrices (folder, size, last use), in no particular order."""
        found = []
        for place in self.PLACES:
            for mark in self.root.glob(f"{place}/{CACHE_FILE}"):
                folder = mark.parent
                if folder.name.startswith(TEMP_PREFIX):  # a save or a removal under way
                    continue
                try:
                    used = mark.stat().st_mtime
                except OSError:  # removed meanwhile
                    continue
                found.append(Entry(folder.resolve(), (folder,), folder_size(folder), used))
        return found

    def make_room(self, keep: str | os.PathLike[str]) -> list[Entry]:
        """Remove the least recently used matrices (never ``keep``, never one in use in this
        process) until the cache fits its budget; return those removed."""
        with _IN_USE_LOCK:
            busy = {Path(keep).resolve(), *_IN_USE}
            return evict(
                self.entries(),
                self.budget,
                busy,
                what=("cached matrix", "cached matrices"),
                setting="matrix_cache_mb",
            )


# Folders being read or written in this process: the cache leaves them alone.
_IN_USE: collections.Counter[Path] = collections.Counter()
_IN_USE_LOCK = threading.Lock()


@contextlib.contextmanager
def using(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, the matrix cache of this process does not remove ``folder``."""
    key = Path(folder).resolve()
    with _IN_USE_LOCK:
        _IN_USE[key] += 1
    try:
        yield
    finally:
        with _IN_USE_LOCK:
            _IN_USE[key] -= 1
            if not _IN_USE[key]:
                del _IN_USE[key]


def _write_matrix_files(matrix: EmbeddingMatrix, out: Path, dtype: str) -> None:

    with atomic_path(out / MATRIX_FILE) as tmp:
        with tmp.open("wb") as f:
            np.save(f, np.asarray(matrix.vectors).astype(dtype, copy=False), allow_pickle=False)
        matrix_sha = sha256_file(tmp)

    escaped = sum(_has_line_break(t) for t in matrix.vocab)
    tokens = [_escape_line(t) for t in matrix.vocab] if escaped else list(matrix.vocab)
    vocab_bytes = text_lines(tokens).encode("utf-8")
    write_bytes(out / VOCAB_FILE, vocab_bytes)
    model = (matrix.manifest.get("model") or {}).get("model_id", "")
    if escaped and (model, escaped) not in _TOLD_LINE_BREAKS:  # once per model, not per save
        _TOLD_LINE_BREAKS.add((model, escaped))
        log.info(
            "%s; vocab.txt escapes them with backslashes (load_matrix undoes it)",
            "1 token holds a line break" if escaped == 1 else f"{escaped} tokens hold line breaks",
        )

    files = {MATRIX_FILE: matrix_sha, VOCAB_FILE: hashlib.sha256(vocab_bytes).hexdigest()}
    if matrix.columns:
        rows_bytes = _rows_table(matrix).encode("utf-8")
        write_bytes(out / ROWS_FILE, rows_bytes)
        files[ROWS_FILE] = hashlib.sha256(rows_bytes).hexdigest()
    rows, dims = matrix.shape
    manifest = _jsonable(dict(matrix.manifest))
    manifest.update(
        {
            "rows": rows,
            "dims": dims,
            "dtype": dtype,
            "vocab_escaping": "backslash" if escaped else "none",
            "escaped_tokens": escaped,
            "columns": list(matrix.columns),
            "files": files,
        }
    )
    write_json(out / MANIFEST_FILE, manifest)


_TOLD_LINE_BREAKS: set[tuple[str, int]] = set()


def saved_matrix(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the complete matrix saved in ``folder``, or None when there is none.

    What the app and the CLI check before writing, so nothing is replaced without asking.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return _read_manifest(path)
    except FileNotFoundError:  # removed meanwhile
        return None
    except BadRun:
        return {}  # something is there, but not a readable matrix: still not to be lost


def load_matrix(folder: str | os.PathLike[str], *, verify: bool = False) -> EmbeddingMatrix:
    """Read a matrix folder written by :func:`save_matrix`; vectors come back as float32.

    With ``verify`` the files' sha256 sums are checked against the manifest.
    """
    src = Path(folder)
    with using(src):
        try:
            return _load_matrix(src, verify=verify)
        except FileNotFoundError as exc:  # removed while it was read (by another process)
            raise BadRun(_not_there(src)) from exc


def _not_there(folder: Path) -> str:
    return (
        f"The matrix '{_matrix_name(folder)}' is not there: it was never saved, or it was "
        "removed (matrices built from a model go when their disk space is full, least recently "
        "used first). Build it again."
    )


def _matrix_name(folder: str | os.PathLike[str]) -> str:
    """What messages call the matrix in ``folder``: its folder's name, never the server path."""
    return Path(os.path.abspath(folder)).name or "matrix"


def _load_matrix(src: Path, *, verify: bool) -> EmbeddingMatrix:
    if not src.is_dir():
        raise BadRun(_not_there(src))
    if (src / CACHE_FILE).is_file():
        touch(src / CACHE_FILE)  # used: the cache removes it last
    name = _matrix_name(src)
    matrix_path = _need(src, MATRIX_FILE)
    vocab_path = _need(src, VOCAB_FILE)
    manifest = _read_manifest(_need(src, MANIFEST_FILE))
    if verify:
        for file, expected in manifest.get("files", {}).items():
            if (src / file).is_file() and sha256_file(src / file) != expected:
                raise BadRun(
                    f"The matrix '{name}': {file} does not match the sha256 in "
                    f"{MANIFEST_FILE}; the file was changed or only partly written. Rebuild "
                    "the matrix."
                )
    vectors = _read_vectors(matrix_path)
    lines = _read_vocab(vocab_path, escaped=manifest.get("vocab_escaping") == "backslash")
    if vectors.shape[0] != len(lines):
        raise BadRun(
            f"The matrix '{name}': {MATRIX_FILE} has {vectors.shape[0]} rows but {VOCAB_FILE} has "
            f"{len(lines)} lines; they must match one to one. The folder is incomplete or was "
            "edited by hand; rebuild the matrix."
        )
    columns = _read_rows_table(src, manifest, len(lines))
    try:
        return EmbeddingMatrix(
            vectors=vectors.astype(np.float32, copy=False),
            vocab=tuple(lines),
            manifest=manifest,
            columns=columns,
        )
    except BadConfig as exc:
        raise BadRun(f"The matrix '{name}': {MANIFEST_FILE}: {exc} Rebuild the matrix.") from exc


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise BadRun(
            f"The matrix '{_matrix_name(folder)}' has no {name}: it was only partly written, or "
            "it is being removed. Build it again."
        )
    return path


def _in_matrix(path: Path) -> str:
    """``"The matrix 'NAME': FILE"``, for messages about one of a matrix folder's files."""
    return f"The matrix '{_matrix_name(path.parent)}': {path.name}"


def _reason(exc: Exception) -> str:
    """Why reading failed, without the file's server path (which OSError's text carries)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} is not readable UTF-8 JSON ({_reason(exc)}); rebuild the matrix."
        ) from exc
    if not isinstance(manifest, dict):
        raise BadRun(f"{_in_matrix(path)} does not hold a JSON object; rebuild the matrix.")
    return manifest


def _read_vectors(path: Path) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} cannot be read as a .npy array ({_reason(exc)}); rebuild the "
            "matrix."
        ) from exc
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise BadRun(
            f"{_in_matrix(path)} holds a {vectors.dtype} array of shape {vectors.shape}; "
            "a matrix must be 2-D floats. Rebuild the matrix."
        )
    return vectors


def _read_vocab(path: Path, *, escaped: bool) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} is not readable UTF-8 ({_reason(exc)}); rebuild the matrix."
        ) from exc
    if text and not text.endswith("\n"):
        text += "\n"  # tolerate a hand-edited file without a final line end
    lines = text[:-1].split("\n") if text else []
    return [_unescape_line(line) for line in lines] if escaped else lines


def _rows_table(matrix: EmbeddingMatrix) -> str:
    """rows.tsv: a header, then per row its token (tabs and line breaks shown escaped, guarded
    against spreadsheet formulas; vocab.txt is the one that counts) and its facts."""
    names = list(matrix.columns)
    lines = ["\t".join(["token", *names])]
    for i, token in enumerate(matrix.vocab):
        shown = spreadsheet_cell(_escape_line(token).replace("\t", "\\t"))
        lines.append("\t".join([shown, *(str(matrix.columns[n][i]) for n in names)]))
    return text_lines(lines)


def _read_rows_table(
    folder: Path, manifest: dict[str, Any], rows: int
) -> dict[str, tuple[Any, ...]]:
    """The row facts of rows.tsv (numbers back as ints), or none when the matrix has none."""
    names = manifest.get("columns") or []
    if not names:
        return {}
    path = _need(folder, ROWS_FILE)
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} is not readable UTF-8 ({_reason(exc)}); rebuild the matrix."
        ) from exc
    table = [line.split("\t") for line in lines[1:]]
    if len(table) != rows or any(len(r) != len(names) + 1 for r in table):
        raise BadRun(
            f"{_in_matrix(path)} does not hold one line of {len(names) + 1} fields per row "
            f"({rows} rows); "
            "rebuild the matrix."
        )
    columns = {}
    for k, name in enumerate(names, start=1):
        values = [r[k] for r in table]
        if all(v.lstrip("-").isdigit() for v in values):
            columns[name] = tuple(int(v) for v in values)
        else:
            columns[name] = tuple(values)
    return columns


def text_lines(tokens: Sequence[str]) -> str:
    """Tokens as text, one per line, each line ended by "\\n" (so 0 tokens -> "")."""
    return "".join(f"{t}\n" for t in tokens)


def _has_line_break(token: str) -> bool:
    return any(ch in _LINE_BREAKS for ch in token)


def _escape_line(token: str) -> str:
    out = token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    for ch in _LINE_BREAKS[2:]:
        out = out.replace(ch, f"\\u{ord(ch):04x}")
    return out


def _unescape_line(line: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "\\":
            return "\\"
        if code == "n":
            return "\n"
        if code == "r":
            return "\r"
        return chr(int(code[1:], 16))

    return _UNESCAPE.sub(one, line)


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths, enums, tuples and sets as JSON types."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
