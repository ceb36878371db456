"""Projection: map shapes, cluster structure, reproducibility, the cache, edge cases, cancel.

UMAP's first call in a process compiles numba code (seconds), so the UMAP map of the cluster
matrix is made once per module and shared; most other behaviour is checked with PCA maps.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from embedgen.errors import BadConfig, Cancelled
from embedgen.matrix import EmbeddingMatrix
from embedgen.projection import (
    Projection,
    ProjectionOptions,
    Reducer,
    cache_path,
    fingerprint,
    project,
    warm_up,
)

PCA_2D = ProjectionOptions(reducer=Reducer.PCA)


def cluster_matrix(rows_per_cluster: int = 100, dims: int = 32, seed: int = 0) -> EmbeddingMatrix:
    """3 well-separated Gaussian clusters; row ``i`` is in cluster ``i // rows_per_cluster``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dims)) * 6.0
    vectors = np.concatenate(
        [c + rng.standard_normal((rows_per_cluster, dims)) for c in centres]
    ).astype(np.float32)
    vocab = tuple(f"w{i}" for i in range(len(vectors)))
    return EmbeddingMatrix(vectors, vocab, {"method": "input"})


def cluster_labels(rows_per_cluster: int = 100) -> np.ndarray:
    return np.repeat(np.arange(3), rows_per_cluster)


def within_and_across(coords: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean map distance between rows of the same cluster, and between rows of different ones."""
    dist = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(dist[same & off_diagonal].mean()), float(dist[~same].mean())


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Keep every cache file in the test's folder, even one written without ``cache_dir``."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def clusters() -> EmbeddingMatrix:
    return cluster_matrix()


@pytest.fixture(scope="module")
def umap_map(clusters, tmp_path_factory) -> tuple[Projection, list[tuple[int, int]], Path]:
    """The default (UMAP 2D, seed 0) map of the cluster matrix, its progress, its cache folder."""
    steps: list[tuple[int, int]] = []
    cache_dir = tmp_path_factory.mktemp("projections")
    result = project(clusters, cache_dir=cache_dir, progress=lambda d, t: steps.append((d, t)))
    return result, steps, cache_dir


# ---- shape and structure -------------------------------------------------------------------


def test_umap_map_has_one_2d_point_per_row(umap_map, clusters):
    result = umap_map[0]
    assert result.coords.shape == (300, 2)
    assert result.coords.dtype == np.float32
    assert np.isfinite(result.coords).all()
    assert not result.from_cache
    np.testing.assert_array_equal(result.rows, np.arange(300))


def test_umap_map_keeps_clusters_together(umap_map):
    within, across = within_and_across(umap_map[0].coords, cluster_labels())
    assert within < 0.5 * across, f"within-cluster {within:.2f} vs across {across:.2f}"


def test_umap_3d_map_has_one_3d_point_per_row(clusters, tmp_path):
    result = project(clusters, ProjectionOptions(dims=3), cache_dir=tmp_path)
    assert result.coords.shape == (300, 3)
    within, across = within_and_across(result.coords, cluster_labels())
    assert within < 0.5 * across, f"within-cluster {within:.2f} vs across {across:.2f}"


@pytest.mark.parametrize("dims", [2, 3])
def test_pca_map_has_requested_dims_and_keeps_clusters_apart(clusters, tmp_path, dims):
    result = project(
        clusters, ProjectionOptions(reducer=Reducer.PCA, dims=dims), cache_dir=tmp_path
    )
    assert result.coords.shape == (300, dims)
    within, across = within_and_across(result.coords, cluster_labels())
    assert within < 0.5 * across, f"within-cluster {within:.2f} vs across {across:.2f}"


def test_same_seed_gives_identical_umap_coords(umap_map, clusters, tmp_path):
    again = project(clusters, ProjectionOptions(seed=0), cache_dir=tmp_path)  # fresh cache
    assert not again.from_cache
    np.testing.assert_array_equal(again.coords, umap_map[0].coords)


def test_record_names_reducer_params_seed_and_time(umap_map):
    record = umap_map[0].as_record()
    assert record["reducer"] == "umap"
    assert record["dims"] == 2
    assert record["seed"] == 0
    assert record["params"]["n_neighbors"] == 15
    assert record["params"]["pca_first"] == 50
    assert record["threads"] == 1  # a fixed seed makes the layout single-threaded
    assert record["seconds"] > 0
    assert record["knn"] == "exact"


def test_progress_starts_at_zero_rises_and_reaches_its_total(umap_map):
    steps = umap_map[1]
    total = steps[0][1]
    assert steps[0] == (0, total)
    assert steps[-1] == (total, total)
    assert all(t == total for _, t in steps)
    done = [d for d, _ in steps]
    assert done == sorted(done), "progress went backwards"
    assert len(steps) > 4, "expected stage and epoch reports"


# ---- the cache -----------------------------------------------------------------------------


def test_second_call_loads_the_cache_with_equal_coords(clusters, tmp_path):
    first = project(clusters, PCA_2D, cache_dir=tmp_path)
    steps: list[tuple[int, int]] = []
    second = project(
        clusters, PCA_2D, cache_dir=tmp_path, progress=lambda d, t: steps.append((d, t))
    )
    assert (first.from_cache, second.from_cache) == (False, True)
    np.testing.assert_array_equal(second.coords, first.coords)
    assert second.details == first.details
    assert steps[-1][0] == steps[-1][1]


def test_umap_map_is_cached_too(umap_map, clusters):
    result, _, cache_dir = umap_map
    cached = project(clusters, cache_dir=cache_dir)
    assert cached.from_cache
    np.testing.assert_array_equal(cached.coords, result.coords)


def test_different_options_use_different_cache_files(clusters, tmp_path):
    pca_3d = ProjectionOptions(reducer=Reducer.PCA, dims=3)
    assert cache_path(clusters, PCA_2D, tmp_path) != cache_path(clusters, pca_3d, tmp_path)
    assert cache_path(clusters, ProjectionOptions(seed=0)) != cache_path(
        clusters, ProjectionOptions(seed=1)
    )
    project(clusters, PCA_2D, cache_dir=tmp_path)
    project(clusters, pca_3d, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_corrupt_cache_file_is_ignored_and_rebuilt(clusters, tmp_path, caplog):
    first = project(clusters, PCA_2D, cache_dir=tmp_path)
    path = cache_path(clusters, PCA_2D, tmp_path)
    path.write_bytes(b"not a numpy file")
    with caplog.at_level(logging.WARNING, logger="embedgen.projection"):
        rebuilt = project(clusters, PCA_2D, cache_dir=tmp_path)
    assert not rebuilt.from_cache
    assert "projection cache" in caplog.text
    np.testing.assert_array_equal(rebuilt.coords, first.coords)
    assert project(clusters, PCA_2D, cache_dir=tmp_path).from_cache  # the file was rewritten


def test_cache_of_wrong_shape_is_rebuilt(clusters, tmp_path):
    project(clusters, PCA_2D, cache_dir=tmp_path)
    np.save(cache_path(clusters, PCA_2D, tmp_path), np.zeros((7, 2), dtype=np.float32))
    assert not project(clusters, PCA_2D, cache_dir=tmp_path).from_cache


def test_default_cache_lives_under_embedgen_home(clusters, home):
    assert cache_path(clusters, PCA_2D).parent == home / "cache" / "projections"
    assert project(clusters, PCA_2D).from_cache is False
    assert project(clusters, PCA_2D).from_cache is True
    assert len(list((home / "cache" / "projections").glob("*.npy"))) == 1


def test_fingerprint_follows_vectors_and_vocab(clusters):
    same = EmbeddingMatrix(clusters.vectors.copy(), tuple(clusters.vocab))
    assert fingerprint(same) == fingerprint(clusters)
    changed = clusters.vectors.copy()
    changed[5, 3] += 1.0
    assert fingerprint(EmbeddingMatrix(changed, clusters.vocab)) != fingerprint(clusters)
    renamed = ("x",) + clusters.vocab[1:]
    assert fingerprint(EmbeddingMatrix(clusters.vectors, renamed)) != fingerprint(clusters)


# ---- bad input and edge cases --------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 4])
def test_dims_other_than_2_or_3_is_bad_config(dims):
    with pytest.raises(BadConfig, match=r"dimensions \(dims\) must be in \[2, 3\]"):
        ProjectionOptions(dims=dims)


@pytest.mark.parametrize(
    "change",
    [{"reducer": "tsne"}, {"n_neighbors": 1}, {"min_dist": -0.1}, {"metric": "hamming"},
     {"pca_first": 1}, {"seed": -1}, {"max_rows": 0}],
)  # fmt: skip
def test_out_of_range_options_are_bad_config(change):
    with pytest.raises(BadConfig):
        ProjectionOptions(**change)


def test_reducer_given_as_string_becomes_the_enum():
    assert ProjectionOptions(reducer="pca").reducer is Reducer.PCA


def test_nan_rows_are_bad_config_naming_how_many(clusters, tmp_path):
    vectors = clusters.vectors.copy()
    vectors[[4, 10, 11], 0] = np.nan
    with pytest.raises(BadConfig, match=r"3 of 300 rows .*row 4, 'w4'"):
        project(EmbeddingMatrix(vectors, clusters.vocab), PCA_2D, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.npy"))


def test_tiny_matrix_clamps_neighbours_and_still_maps(tmp_path):
    rng = np.random.default_rng(3)
    tiny = EmbeddingMatrix(rng.standard_normal((5, 8)).astype(np.float32), tuple("abcde"))
    result = project(tiny, cache_dir=tmp_path)
    assert result.coords.shape == (5, 2)
    assert np.isfinite(result.coords).all()
    assert result.details["n_neighbors_used"] == 4
    assert result.details["reducer_used"] == "umap"


@pytest.mark.parametrize("n_rows", [1, 2, 3])
def test_fewer_than_four_rows_fall_back_to_pca(n_rows, tmp_path):
    rng = np.random.default_rng(4)
    few = EmbeddingMatrix(
        rng.standard_normal((n_rows, 8)).astype(np.float32), tuple("abc")[:n_rows]
    )
    result = project(few, ProjectionOptions(dims=3), cache_dir=tmp_path)
    assert result.coords.shape == (n_rows, 3)
    assert np.isfinite(result.coords).all()
    assert result.details["reducer_used"] == "pca"


def test_identical_rows_share_one_point(tmp_path):
    base = cluster_matrix(rows_per_cluster=20, dims=8, seed=5).vectors
    vectors = np.concatenate([base, base[:10]])  # rows 60..69 repeat rows 0..9
    matrix = EmbeddingMatrix(vectors, tuple(f"w{i}" for i in range(len(vectors))))
    result = project(matrix, cache_dir=tmp_path)
    assert result.details["distinct_rows"] == 60
    np.testing.assert_array_equal(result.coords[60:], result.coords[:10])
    assert np.isfinite(result.coords).all()


def test_all_rows_identical_map_to_one_point(tmp_path):
    same = EmbeddingMatrix(np.ones((10, 4), dtype=np.float32), tuple("abcdefghij"))
    result = project(same, cache_dir=tmp_path)
    assert result.coords.shape == (10, 2)
    assert np.ptp(result.coords, axis=0).max() == 0.0


def test_max_rows_maps_a_seeded_sample_of_rows(clusters, tmp_path):
    options = ProjectionOptions(reducer=Reducer.PCA, max_rows=50)
    result = project(clusters, options, cache_dir=tmp_path)
    assert result.coords.shape == (50, 2)
    assert len(np.unique(result.rows)) == 50 and np.all(np.diff(result.rows) > 0)
    again = project(clusters, options, cache_dir=tmp_path / "other")
    np.testing.assert_array_equal(again.rows, result.rows)


# ---- cancel --------------------------------------------------------------------------------


def test_cancel_before_start_raises_cancelled_and_caches_nothing(clusters, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        project(clusters, PCA_2D, cache_dir=tmp_path, cancel=cancel)
    assert not list(Path(tmp_path).glob("*.npy"))


def test_cancel_during_umap_layout_raises_cancelled(clusters, tmp_path):
    import numba

    threads = numba.get_num_threads()
    cancel = threading.Event()

    def cancel_once_layout_starts(done: int, total: int) -> None:
        if done >= 2:  # the neighbour graph is done; the layout is next
            cancel.set()

    with pytest.raises(Cancelled):
        project(clusters, cache_dir=tmp_path, progress=cancel_once_layout_starts, cancel=cancel)
    assert not list(tmp_path.glob("*.npy"))
    assert numba.get_num_threads() == threads, "numba thread count was not restored"


def test_warm_up_compiles_without_writing_a_cache(home):
    assert warm_up(seed=0) > 0
    assert not home.exists()
