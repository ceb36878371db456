"""What the map's points are coloured by: clusters, frequency in the data, label association."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from embedgen.clusters import kmeans_clusters
from embedgen.data import LabelledData
from embedgen.tokenstats import align
from embedgen.ui.datastats import label_stats
from embedgen.ui.matrices import MatrixEntry

CLUSTER = "cluster"
FREQUENCY = "frequency in data"
ASSOCIATION = "label association"
NONE = "none"
SIGNIFICANT_Z = 1.96  # two-sided 5 %: weaker associations are left uncoloured


@st.cache_data(show_spinner="Clustering…", max_entries=8)
def _clusters(key: str, k: int, _vectors: np.ndarray) -> np.ndarray:
    return kmeans_clusters(_vectors, k)


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
