"""Building a matrix: rows of tokens or words by each method, the run's label signal, then
post-processing. One entry, :func:`build_matrix`; each method's rows come from its module
(``tables``: input and projected, ``contextual``, ``aggregated``)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from embedgen.blend import SHRINK, blend, label_signal, logits
from embedgen.device import resolve_device
from embedgen.errors import BadConfig
from embedgen.matrix import contextual, tables
from embedgen.matrix.aggregated import aggregated_rows
from embedgen.matrix.manifest import manifest_for
from embedgen.matrix.types import (
    EmbeddingMatrix,
    MatrixOptions,
    Method,
    Rows,
    methods_for,
    resolve_layers,
    split_source,
)
from embedgen.models import Encoder
from embedgen.postprocess import apply as apply_postprocess
from embedgen.progress import ProgressFn
from embedgen.tokens import describe_removed, select_tokens
from embedgen.train import Head, Run
from embedgen.words import Corpus, WordVocab, count_in, words_from_corpus

log = logging.getLogger(__name__)


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
    its rows are the corpus's words. A corpus the options do not read (aggregated with no
    corpus contexts) only gives the words.
    """
    run, encoder = split_source(source)
    options = (options or MatrixOptions()).for_source(run)
    check_can_build(options, run, words, corpus)
    words, corpus = rows_of(options, words, corpus)
    head = run.head if run is not None else None
    projection = projection_for(options, head)
    if words is None:
        vectors, vocab, rows = _token_rows(encoder, projection, options, progress, cancel)
        columns: dict[str, tuple[Any, ...]] = {}
    else:
        vectors, columns, rows = word_rows(
            encoder, projection, words, corpus, options, progress, cancel, run=run
        )
        vocab = words.words
    if options.label_weight:
        assert head is not None  # checked above
        label = label_signal(logits(head, vectors))
        vectors = blend(vectors, label, options.label_weight, centre=False)
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
        manifest=manifest_for(encoder, run, options, rows, steps, vectors.shape),
        columns=columns,
    )


def projection_for(options: MatrixOptions, head: Head | None) -> Head | None:
    """The trained projection the rows pass through, or None."""
    if options.method is Method.INPUT or options.label_weight:
        return None  # label-weighted rows start from the raw states (blend.py)
    if options.method.needs_run:
        return head
    return head if options.through_projection else None


def check_can_build(
    options: MatrixOptions, run: Run | None, words: WordVocab | None, corpus: Corpus | None
) -> None:
    """Raise :class:`BadConfig` saying what is missing when ``options`` cannot build rows
    from this source, word list and corpus."""
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


def word_rows(
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
    record: dict[str, Any] = {"rows_are": Rows.WORDS, "vocabulary": words.record}
    if corpus is not None:
        record["corpus"] = corpus.record()
    columns: dict[str, tuple[Any, ...]] = {}
    if words.record.get("source") == "corpus" or corpus is not None:
        columns["corpus_count"] = words.counts
    if not options.method.reads_context:
        if progress is not None:
            progress(0, 1)
        vectors = tables.word_rows(encoder, words.words, head)
        if progress is not None:
            progress(1, 1)
        return vectors, columns, record
    info = encoder.info
    layers = resolve_layers(options, info.num_layers, info.model_id)
    record["layers"] = list(layers)
    device = resolve_device(options.device)
    if options.method is Method.CONTEXTUAL:
        vectors = contextual.whole_word_vectors(
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
    vectors, read, record["contexts"] = aggregated_rows(
        encoder,
        head,
        words,
        corpus,
        layers,
        options,
        device,
        run=run,
        use_cache=use_cache,
        progress=progress,
        cancel=cancel,
    )
    return vectors, {**columns, **read}, record


def rows_of(
    options: MatrixOptions, words: WordVocab | None, corpus: Corpus | None
) -> tuple[WordVocab | None, Corpus | None]:
    """The word rows (a corpus's words when ``words`` is None and the method needs words) and
    the corpus the rows are read or counted in (None when the options do not read one)."""
    if words is None and options.method.needs_words and corpus is not None:
        words = words_from_corpus(corpus)
    return words, corpus if options.needs_corpus else None


def _token_rows(
    encoder: Encoder,
    head: Head | None,
    options: MatrixOptions,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Rows for the model's tokens (filtered), the tokens, and a record of the rows."""
    ids, removed = selected_tokens(encoder, options)
    log.info("Token rows: %d kept (%s removed)", len(ids), describe_removed(removed))
    record: dict[str, Any] = {"rows_are": Rows.TOKENS, "removed": removed}
    if options.method.reads_context:
        info = encoder.info
        layers = resolve_layers(options, info.num_layers, info.model_id)
        record["layers"] = list(layers)
        vectors = contextual.token_rows(
            encoder,
            ids,
            layers,
            device=resolve_device(options.device),
            head=head,
            batch_size=options.batch_size,
            progress=progress,
            cancel=cancel,
        )
    else:
        vectors = tables.table_rows(encoder, head, ids)
        if progress is not None:
            progress(1, 1)
    return vectors, encoder.tokenizer.convert_ids_to_tokens(ids), record


def selected_tokens(encoder: Encoder, options: MatrixOptions) -> tuple[list[int], Any]:
    """The ids of the tokens that become rows by ``options``' filters, and what was removed."""
    return select_tokens(
        encoder.tokenizer,
        encoder.info.vocab_size,
        drop_special=options.drop_special,
        cjk_only=options.cjk_only,
        drop_continuation=options.drop_continuation,
    )
