"""A matrix's name and default folder: the one naming rule, for the CLI and the app alike.

A name says everything that makes two matrices differ (``embedgen.paths.matrix_name``): method,
layers, ``tuned`` or ``base``, the word rows' list or corpus, filters, post-processing. A run's
matrices live in ``RUN/matrices/<name>``, a plain model's in
``$EMBEDGEN_HOME/matrices/<model>/<name>`` (or the user's workspace).
"""

from __future__ import annotations

from pathlib import Path

from embedgen.matrix.types import (
    MatrixOptions,
    reflects_run,
    resolve_layers,
    split_source,
)
from embedgen.models import Encoder
from embedgen.paths import matrix_folder, matrix_name, slug
from embedgen.train import Run
from embedgen.words import Corpus, WordVocab


def name_for(
    source: Encoder | Run,
    options: MatrixOptions,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
) -> str:
    """The matrix's name by the one naming rule (``embedgen.paths.matrix_name``).

    ``corpus`` without ``words``: the rows are the corpus's words. A corpus that the options
    do not read (aggregated with no corpus contexts) does not name where words were read.
    """
    run, encoder = split_source(source)
    options = options.for_source(run)
    info = encoder.info
    layers = None
    if options.method.reads_context:
        layers = resolve_layers(options, info.num_layers, info.model_id)
    tuned = reflects_run(options, run)
    label = _rows_label(words, corpus, read=options.needs_corpus)
    return matrix_name(options, tuned=tuned, layers=layers, words=label)


def _rows_label(words: WordVocab | None, corpus: Corpus | None, *, read: bool) -> str | None:
    """``words-<list or corpus>`` (``-in-<corpus>`` when read in another), or None for tokens."""
    if words is None and corpus is None:
        return None
    vocab = None
    if words is not None:
        vocab = words.record.get("list") or words.record.get("corpus", {}).get("name")
    if vocab is None and corpus is not None:
        vocab = corpus.name
    label = f"words-{slug(Path(vocab or 'words').stem)}"
    if corpus is not None and read and vocab != corpus.name:
        label += f"-in-{slug(Path(corpus.name).stem)}"
    return label


def folder_for(
    source: Encoder | Run,
    options: MatrixOptions,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    user: str | None = None,
) -> Path:
    """Where the matrix goes unless told otherwise: its run's ``matrices/<name>``, or
    ``matrices/<model>/<name>`` under ``$EMBEDGEN_HOME`` (``user``'s workspace when given) for
    a plain model."""
    run, encoder = split_source(source)
    return matrix_folder(
        name_for(source, options, words=words, corpus=corpus),
        run_folder=run.folder if run is not None else None,
        model_id=encoder.info.model_id,
        user=user,
    )
