"""The quality report: every matrix method and option a source can build, scored side by side.

``evaluate_all(source, similarity, analogy)`` builds each option (see :func:`options_for`) and
scores it with ``embedgen.evaluate``; ``markdown`` makes the table that ``BENCHMARKS.md`` holds.
Rows of each matrix:

- **tokens**: the model's CJK tokens (the benchmarks' words are Chinese; other tokens only add
  rows to be wrong with). A benchmark word that is no token is pooled from its pieces, and the
  report says how many were.
- **words**: every word of the benchmark files, so a word's own vector is scored, and with
  ``search_words=N`` the N most frequent words of jieba's dictionary besides. Analogy answers
  are looked for among all rows: among the benchmarks' own words only (N = 0), the candidates
  are few and CA8's morphological answers near-copies of the question words, so the scores
  are far above what the same vectors reach over a real vocabulary.

Every option keeps its row in the table, good or bad; nothing is picked for the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from embedgen.blend import blend, label_signal, logits, projected, unit
from embedgen.errors import BadConfig
from embedgen.evaluate import AnalogySet, SimilaritySet, evaluate, label_purity
from embedgen.evaluate import similarity as evaluate_similarity
from embedgen.matrix import EmbeddingMatrix, MatrixOptions, build_matrix, name_for
from embedgen.models import Encoder
from embedgen.postprocess import PostProcess
from embedgen.postprocess import apply as apply_postprocess
from embedgen.progress import ProgressFn, check_cancel
from embedgen.tokenstats import TokenStats, significant
from embedgen.train import Run
from embedgen.words import Corpus, WordVocab, dictionary_words, words_from_list

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """One matrix to build and score: its options and whether its rows are words."""

    label: str
    options: MatrixOptions
    words: bool


def options_for(source: Encoder | Run, *, corpus: bool) -> list[Option]:
    """The methods and options worth comparing for ``source``, each plain and centred.

    Token rows: input, projected (from a run), contextual at the last layer. Word rows: the
    same, contextual also over the last four layers' mean, and aggregated (generated contexts,
    and with the corpus's when there is one). From a run, contextual and aggregated are scored
    through the projection and raw (the tuned encoder's states).
    """
    run = source if isinstance(source, Run) else None
    layers = (run.encoder if run else source).info.num_layers
    cjk = {"cjk_only": True}
    plans: list[tuple[str, dict[str, Any], bool]] = [("input", {"method": "input", **cjk}, False)]
    if run is not None:
        plans.append(("projected", {"method": "projected", **cjk}, False))
    plans.append(("contextual", {"method": "contextual", **cjk}, False))
    if run is not None:
        plans.append(
            ("contextual raw", {"method": "contextual", "through_projection": False, **cjk}, False)
        )
    plans.append(("input", {"method": "input"}, True))
    if run is not None:
        plans.append(("projected", {"method": "projected"}, True))
    plans.append(("contextual", {"method": "contextual"}, True))
    plans.append(
        (
            f"contextual L{max(0, layers - 3)}-{layers}",
            {"method": "contextual", "layers": f"{max(0, layers - 3)}-{layers}"},
            True,
        )
    )
    plans.append(
        ("aggregated, generated contexts", {"method": "aggregated", "corpus_contexts": 0}, True)
    )
    if corpus:
        plans.append(("aggregated, corpus + generated", {"method": "aggregated"}, True))
    if run is not None:
        plans.append(
            ("aggregated raw", {"method": "aggregated", "through_projection": False}, True)
        )
    out = []
    for label, values, words in plans:
        for center in (False, True):
            options = MatrixOptions(**values, postprocess=PostProcess(center=center))
            out.append(Option(label + (", centred" if center else ""), options, words))
    return out


def evaluate_all(
    source: Encoder | Run,
    similarity: Sequence[SimilaritySet],
    analogy: Sequence[AnalogySet] = (),
    *,
    corpus: Corpus | None = None,
    options: Sequence[Option] | None = None,
    search_words: int = 0,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Build and score each of ``options`` (default: :func:`options_for`); one record each.

    A record holds the option's label, the matrix's name and shape, whether its rows are words,
    the seconds it took to build, and the ``evaluate`` report. The word rows of every word
    matrix are the benchmarks' words, then ``search_words`` common words from jieba's
    dictionary (:func:`~embedgen.words.dictionary_words`) for analogy answers to be searched
    among (built once per method, reused).
    """
    chosen = (
        list(options) if options is not None else options_for(source, corpus=corpus is not None)
    )
    words = benchmark_words(similarity, analogy, search_words=search_words)
    built: dict[tuple[MatrixOptions, bool], tuple[EmbeddingMatrix, float]] = {}
    records = []
    for k, option in enumerate(chosen):
        check_cancel(cancel, "The report")
        rows = words if option.words else None
        used_corpus = corpus if option.options.reads_corpus else None
        # Options that differ only in post-processing share one build.
        plain = replace(option.options, postprocess=PostProcess())
        if (plain, option.words) not in built:
            start = time.perf_counter()
            matrix = build_matrix(source, plain, words=rows, corpus=used_corpus, cancel=cancel)
            built[plain, option.words] = matrix, time.perf_counter() - start
        base, seconds = built[plain, option.words]
        vectors, _ = apply_postprocess(base.vectors, option.options.postprocess)
        matrix = EmbeddingMatrix(vectors, base.vocab, base.manifest)
        scored = evaluate(matrix, similarity, analogy)
        records.append(
            {
                "label": option.label,
                "name": name_for(source, option.options, words=rows, corpus=used_corpus),
                "rows_are": "words" if option.words else "tokens",
                "shape": list(matrix.shape),
                "build_seconds": round(seconds, 1),
                **{key: scored[key] for key in ("similarity", "analogy")},
            }
        )
        log.info("%s: built in %.1f s and scored", option.label, seconds)
        if progress is not None:
            progress(k + 1, len(chosen))
    return records


def benchmark_words(
    similarity: Sequence[SimilaritySet], analogy: Sequence[AnalogySet], *, search_words: int = 0
) -> WordVocab:
    """Every word of the benchmark files, once, in first-seen order; then the
    ``search_words`` most frequent words of jieba's dictionary that are not among them."""
    words = dict.fromkeys(w for s in [*similarity, *analogy] for w in s.words)
    names = "+".join([s.name for s in similarity] + [a.name for a in analogy])
    own = len(words)
    if search_words:
        words.update(dict.fromkeys(dictionary_words(search_words, exclude=words).words))
    vocab = words_from_list(list(words), name="benchmarks")
    record = {**vocab.record, "files": names, "benchmark_words": own}
    if search_words:
        record["dictionary_words"] = len(words) - own
    return replace(vocab, record=record)


def markdown(records: Sequence[dict[str, Any]]) -> str:
    """The report as a Markdown table: Spearman ×100 per similarity file, 3CosAdd accuracy ×100
    per analogy file (coverage in brackets), rows, build time."""
    if not records:
        return ""
    sims = [r["file"] for r in records[0]["similarity"]]
    anas = [r["file"] for r in records[0]["analogy"]]
    header = ["matrix", "rows", *sims, *(f"{a} (3CosAdd)" for a in anas), "build s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in records:
        cells = [r["label"], f"{r['shape'][0]:,} {r['rows_are']}"]
        for s in r["similarity"]:
            score = "n/a" if s["spearman"] is None else f"{100 * s['spearman']:.1f}"
            cells.append(f"{score} ({s['pairs_found']}/{s['pairs_total']})")
        for a in r["analogy"]:
            acc = a["accuracy_3cosadd"]
            shown = "n/a" if acc is None else f"{100 * acc:.1f}"
            cells.append(f"{shown} ({100 * a['coverage']:.0f}% covered)")
        cells.append(f"{r['build_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The trade-off: label purity against word similarity, for a run
# --------------------------------------------------------------------------------------------

LABEL_WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)
BASELINE_WEIGHTS = (0.1, 0.25, 0.5, 1.0)


def tradeoff(
    run: Run,
    words: WordVocab,
    associations: dict[str, tuple[str, float]],
    *,
    similarity: Sequence[SimilaritySet] = (),
    corpus: Corpus | None = None,
    options: MatrixOptions | None = None,
    label_weights: Sequence[float] = LABEL_WEIGHTS,
    baseline_weights: Sequence[float] = BASELINE_WEIGHTS,
    per_label: int = 30,
    k: int = 10,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """For each way of adding ``run``'s label signal to the untuned rows, its label purity and
    how much word similarity it keeps; one record per point of the curve.

    The points: the untuned rows; the tuned projection alone; the baseline ``untuned ‖ α ·
    tuned projection`` (unit rows, α in ``baseline_weights``); and ``label weight`` β
    (``embedgen.blend``, β in ``label_weights``). Rows are ``words`` read by ``options``
    (default: aggregated at the last layer), built once. Similarity is the mean Spearman over
    ``similarity`` files when given; otherwise "geometry kept": Spearman of the point's cosines
    with the untuned rows' cosines over 20,000 random pairs of rows (seed 0).
    """
    # Long: the docstring defines every point of the curve; the body builds the rows once and
    # scores each point in one loop (its similarity measure is _similarity_kept).
    base = options or MatrixOptions(method="aggregated")
    raw_options = replace(base, through_projection=False, label_weight=0, postprocess=PostProcess())
    raw = build_matrix(
        run,
        raw_options,
        words=words,
        corpus=corpus if raw_options.reads_corpus else None,
        cancel=cancel,
    )
    # Unit rows, not centred: as a matrix's blend builds them (centring depends on the rows).
    untuned = unit(raw.vectors)
    tuned = unit(projected(run.head, raw.vectors))
    label = label_signal(logits(run.head, raw.vectors))
    points = [("untuned", "untuned", 0.0, untuned), ("tuned projection", "tuned", 1.0, tuned)]
    points += [
        (f"untuned ‖ {a:g} · tuned", "baseline", a, np.hstack([untuned, a * tuned]))
        for a in baseline_weights
    ]
    points += [
        (f"label weight {b:g}", "label weight", b, blend(raw.vectors, label, b))
        for b in label_weights
    ]
    pairs = _random_pairs(len(raw.vocab), 20_000)
    reference = _pair_cosines(untuned, pairs)
    records = []
    for n, (label_text, kind, weight, vectors) in enumerate(points):
        check_cancel(cancel, "The trade-off")
        matrix = EmbeddingMatrix(vectors.astype(np.float32), raw.vocab, raw.manifest)
        purity = label_purity(matrix, associations, per_label=per_label, k=k)
        kept, measure = _similarity_kept(matrix, similarity, pairs, reference)
        records.append(
            {
                "option": label_text,
                "kind": kind,
                "weight": weight,
                "purity": purity.purity,
                "similarity": kept,
                "similarity_measure": measure,
                "rows": raw.label,  # every point's rows: these words, read this way
            }
        )
        if progress is not None:
            progress(n + 1, len(points))
    return records


def tradeoff_of_data(
    run: Run,
    stats: TokenStats,
    *,
    similarity: Sequence[SimilaritySet] = (),
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """:func:`tradeoff` of ``run`` with the words of its data (``stats``: their counts per
    label) that lean significantly to a label (``tokenstats.significant``) and the
    ``similarity`` files' words: what the Evaluate and Matrix pages draw."""
    associations = significant(stats)
    if len({label for label, _ in associations.values()}) < 2:
        raise BadConfig(
            "Too few words of the data lean to a label beyond chance (seen at least 10 times, "
            "log-odds z of at least 3) to measure label purity: more labelled texts are needed."
        )
    words = tradeoff_words(associations, similarity)
    return tradeoff(
        run, words, associations, similarity=similarity, progress=progress, cancel=cancel
    )


def _similarity_kept(
    matrix: EmbeddingMatrix,
    similarity: Sequence[SimilaritySet],
    pairs: np.ndarray,
    reference: np.ndarray,
) -> tuple[float | None, str]:
    """How much word similarity a trade-off point keeps, and what that number is: the mean
    Spearman over the ``similarity`` files, or without them the Spearman of its cosines over
    random ``pairs`` of rows with the untuned rows' (``reference``)."""
    if similarity:
        scores = [evaluate_similarity(matrix, s).spearman for s in similarity]
        found = [s for s in scores if s is not None]
        measure = "mean Spearman over " + ", ".join(s.name for s in similarity)
        return (float(np.mean(found)) if found else None), measure
    kept = float(spearmanr(_pair_cosines(matrix.vectors, pairs), reference).statistic)
    return kept, "geometry kept (Spearman with the untuned cosines)"


def _random_pairs(n: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, n, size=(count, 2))
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _pair_cosines(vectors: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", unit[pairs[:, 0]], unit[pairs[:, 1]])


def tradeoff_words(
    associations: dict[str, tuple[str, float]],
    similarity: Sequence[SimilaritySet] = (),
    *,
    per_label: int = 30,
    extra: int = 3,
) -> WordVocab:
    """The rows a trade-off needs: the similarity files' words and, per label, the
    ``extra × per_label`` words that lean to it most (purity takes its words from these)."""
    by_label: dict[str, list[str]] = {}
    for word, (label, z) in sorted(associations.items(), key=lambda kv: -kv[1][1]):
        if z > 0 and len(by_label.setdefault(label, [])) < extra * per_label:
            by_label[label].append(word)
    words = dict.fromkeys(w for s in similarity for w in s.words)
    words.update(dict.fromkeys(w for label_words in by_label.values() for w in label_words))
    return words_from_list(list(words), name="tradeoff")
