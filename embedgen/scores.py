"""Scores of chosen matrices on the user's benchmark files and label words: the Evaluate
page's tables, computed in one go (by a worker, :mod:`embedgen.tasks`' "evaluate" job).

:func:`score_matrices` takes the matrices by name, the word-similarity and analogy files and,
for label purity, where each matrix's label words come from; it returns plain records
(JSON as they are), one list per table, so the job can keep them in job.json and any page
that knows the job folder can draw them. A matrix that cannot be scored one way (no label
words among its rows) gets a note, and the other scores still come.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from embedgen.errors import EmbedgenError
from embedgen.evaluate import (
    AnalogySet,
    SimilaritySet,
    analogy,
    label_purity,
    similarity,
)
from embedgen.matrix import EmbeddingMatrix
from embedgen.neighbours import NeighbourIndex
from embedgen.progress import ProgressFn, check_cancel, stage

log = logging.getLogger(__name__)

Leaning = Mapping[str, tuple[str, float]]  # word -> (label, z): what label_purity takes


@dataclass(frozen=True)
class PurityAsk:
    """Label purity as asked: the strongest ``per_label`` words of each label, ``k``
    neighbours each, a bootstrap of ``resamples``; ``leaning(matrix)`` gives a matrix's label
    words (the data's significant words, counted as its rows are, or a list of the user's)
    and raises :class:`~embedgen.errors.EmbedgenError` with the reason when it cannot."""

    leaning: Callable[[EmbeddingMatrix], Leaning]
    per_label: int = 50
    k: int = 10
    resamples: int = 1000


def score_matrices(
    matrices: Mapping[str, EmbeddingMatrix],
    *,
    similarity_sets: Sequence[SimilaritySet] = (),
    analogy_sets: Sequence[AnalogySet] = (),
    purity: PurityAsk | None = None,
    pool: bool = True,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every matrix scored on every file, and on label purity when asked.

    Returns ``{"similarity": [...], "analogy": [...], "purity": [...], "notes": [...]}``:
    one record per matrix and file (similarity: Spearman, Pearson, pairs found, the words
    pooled and missing, the lines not read; analogy: one per section and "all"), one per
    matrix for purity, and ``{"matrix", "text"}`` notes for what could not be scored.
    """
    out: dict[str, list[dict[str, Any]]] = {
        "similarity": [],
        "analogy": [],
        "purity": [],
        "notes": [],
    }
    steps = len(matrices) * (len(similarity_sets) + len(analogy_sets) + (purity is not None))
    done = 0
    stage(progress, "scoring the matrices", "scores")
    for name, matrix in matrices.items():
        index = NeighbourIndex(matrix)
        for dataset in similarity_sets:
            check_cancel(cancel, "Scoring")
            out["similarity"].append(
                _similarity_record(name, similarity(index, dataset, pool=pool))
            )
            done = _advance(progress, done, steps)
        for questions in analogy_sets:
            check_cancel(cancel, "Scoring")
            out["analogy"] += _analogy_records(name, analogy(index, questions, pool=pool))
            done = _advance(progress, done, steps)
        if purity is not None:
            check_cancel(cancel, "Scoring")
            try:
                record = _purity_record(name, index, purity)
            except EmbedgenError as exc:
                out["notes"].append({"matrix": name, "text": str(exc)})
            else:
                out["purity"].append(record)
                if record["note"]:
                    out["notes"].append({"matrix": name, "text": record["note"]})
            done = _advance(progress, done, steps)
    return out


def _advance(progress: ProgressFn | None, done: int, steps: int) -> int:
    if progress is not None:
        progress(done + 1, steps)
    return done + 1


def _analogy_records(name: str, result: Any) -> list[dict[str, Any]]:
    """One record for the whole file ("all"), then one per section."""
    return [
        {
            "matrix": name,
            "file": result.name,
            "section": "all" if score is result.overall else score.name,
            "3CosAdd": score.accuracy_3cosadd,
            "3CosMul": score.accuracy_3cosmul,
            "found": score.questions_found,
            "total": score.questions_total,
        }
        for score in (result.overall, *result.sections)
    ]


def _similarity_record(name: str, result: Any) -> dict[str, Any]:
    return {
        "matrix": name,
        "file": result.name,
        "Spearman": result.spearman,
        "Pearson": result.pearson,
        "pairs_found": result.pairs_found,
        "pairs_total": result.pairs_total,
        "pooled": list(result.pooled),
        "missing": list(result.missing),
        "malformed": [[m.line, m.reason, m.text] for m in result.malformed],
    }


def _purity_record(name: str, index: NeighbourIndex, ask: PurityAsk) -> dict[str, Any]:
    result = label_purity(
        index, ask.leaning(index.matrix), per_label=ask.per_label, k=ask.k, resamples=ask.resamples
    )
    interval = result.interval
    return {
        "matrix": name,
        "purity": result.purity,
        "low": interval.low if interval is not None else None,
        "high": interval.high if interval is not None else None,
        "per_label": dict(result.per_label),
        "words_used": sum(len(t) for t in result.tokens.values()),
        "qualified": dict(result.qualified or {}),
        "k": result.k,
        "note": result.note,
    }
