"""Clusters for colouring maps follow the direction of the rows."""

from __future__ import annotations

import numpy as np
import pytest

from embedgen.clusters import kmeans_clusters
from embedgen.errors import BadConfig


def test_rows_pointing_the_same_way_share_a_cluster() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3] * 5
    rows = np.concatenate([c + rng.normal(0, 0.3, (50, 8)) for c in centres]).astype(np.float32)
    rows[:50] *= 10  # length must not matter, only direction
    labels = kmeans_clusters(rows, 3)
    groups = [set(labels[i * 50 : (i + 1) * 50]) for i in range(3)]
    assert all(len(g) == 1 for g in groups), groups
    assert len(set.union(*groups)) == 3


def test_same_seed_same_clusters() -> None:
    rows = np.random.default_rng(1).normal(size=(200, 16)).astype(np.float32)
    np.testing.assert_array_equal(kmeans_clusters(rows, 5), kmeans_clusters(rows, 5))


def test_too_many_clusters_is_refused() -> None:
    with pytest.raises(BadConfig, match="between 2 and 4"):
        kmeans_clusters(np.ones((4, 3), dtype=np.float32), 9)


def test_a_large_matrix_is_fitted_on_a_sample_and_every_row_labelled() -> None:
    rng = np.random.default_rng(2)
    centres = np.eye(8, dtype=np.float32)[:3] * 5
    rows = np.concatenate([c + rng.normal(0, 0.3, (400, 8)) for c in centres]).astype(np.float32)
    labels = kmeans_clusters(rows, 3, fit_rows=90)  # fitted on 90 of 1,200 rows
    assert labels.shape == (1200,)
    groups = [set(labels[i * 400 : (i + 1) * 400]) for i in range(3)]
    assert all(len(g) == 1 for g in groups), groups
    assert len(set.union(*groups)) == 3
    np.testing.assert_array_equal(labels, kmeans_clusters(rows, 3, fit_rows=90))
