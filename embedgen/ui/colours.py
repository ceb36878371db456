"""What the map's points are coloured by: clusters, frequency in the data, label association."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from embedgen.clusters import kmeans_clusters
from embedgen.corpus import TokenStats, align, token_stats
from embedgen.data import LabelledData
from embedgen.ui.common import MatrixEntry
from embedgen.words import Corpus, WordSplitter

CLUSTER = "cluster"
FREQUENCY = "frequency in data"
ASSOCIATION = "label association"
NONE = "none"
SIGNIFICANT_Z = 1.96  # two-sided 5 %: weaker associations are left uncoloured


@st.cache_data(show_spinner="Clustering…", max_entries=8)
def _clusters(key: str, k: int, _vectors: np.ndarray) -> np.ndarray:
    return kmeans_clusters(_vectors, k)


@st.cache_resource(show_spinner="Counting tokens in the data…", max_entries=4)
def _stats(
    model_id: str, data_sha: str, columns: tuple[str, str], _tokenizer: Any, _data: LabelledData
) -> TokenStats:
    return token_stats(_tokenizer, _data.texts, _data.labels, _data.label_names)


def label_stats(
    entry: MatrixEntry, data: LabelledData, tokenizer: Any, model_id: str
) -> TokenStats:
    """How often each row's token, or word, occurs in ``data`` per label: word rows count the
    data's words (segmented as word rows are), token rows the model's tokens."""
    if entry.matrix.manifest.get("rows_are") == "words":
        return word_stats(data)
    columns = (data.text_column, data.label_column)
    return _stats(model_id, data.source_sha256, columns, tokenizer, data)


def word_stats(data: LabelledData) -> TokenStats:
    """How often each of the data's words (segmented with jieba, as word rows are) occurs per
    label."""
    words = WordSplitter(Corpus.of(data.texts, data.source_name))
    return _stats("jieba", data.source_sha256, (data.text_column, data.label_column), words, data)


def choices(have_data: bool) -> list[str]:
    return [CLUSTER, ASSOCIATION, FREQUENCY, NONE] if have_data else [CLUSTER, NONE]


def colours(
    choice: str,
    entry: MatrixEntry,
    *,
    n_clusters: int = 12,
    data: LabelledData | None = None,
    tokenizer: Any = None,
    model_id: str = "",
) -> tuple[list[Any] | np.ndarray, bool, list[str] | None]:
    """(value per row, whether the values are categories, extra hover text per row)."""
    matrix = entry.matrix
    n = matrix.shape[0]
    if choice == CLUSTER:
        ids = _clusters(entry.key, n_clusters, matrix.vectors)
        return [f"cluster {c}" for c in ids], True, None
    if choice in (FREQUENCY, ASSOCIATION) and data is not None and tokenizer is not None:
        stats = label_stats(entry, data, tokenizer, model_id)
        counts, top, z = align(stats, matrix.vocab)
        if choice == FREQUENCY:
            hover = [f"{c:,} times in {data.source_name}" for c in counts]
            return np.log10(counts + 1), False, hover
        labels = [t if s >= SIGNIFICANT_Z else "" for t, s in zip(top, z, strict=True)]
        hover = [
            f"{t}, z = {s:.1f}" if t else "not in the data" for t, s in zip(top, z, strict=True)
        ]
        return labels, True, hover
    return [""] * n, True, None
