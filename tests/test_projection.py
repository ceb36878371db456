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

from embedgen import projection as projection_module
from embedgen.errors import BadConfig, Cancelled
from embedgen.matrix import EmbeddingMatrix
from embedgen.projection import (
    DEFAULT_MAX_ROWS,
    Projection,
    ProjectionOptions,
    Reducer,
    cache_path,
    estimate_seconds,
    fingerprint,
    map_points,
    place_rows,
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


class Stages:
    """A progress sink like the app's job: each named stage and the counts reported in it."""

    def __init__(self, cancel_at: str | None = None, cancel: threading.Event | None = None):
        self.names: list[str] = []
        self.units: list[str] = []
        self.counts: dict[str, list[tuple[int, int]]] = {}
        self.cancel_at, self.cancel = cancel_at, cancel

    def set_stage(self, name: str, unit: str = "") -> None:
        self.names.append(name)
        self.units.append(unit)
        self.counts[name] = []
        if self.cancel_at is not None and name.startswith(self.cancel_at):
            self.cancel.set()

    def __call__(self, done: int, total: int) -> None:
        assert self.names, f"({done}, {total}) reported before any stage was named"
        self.counts[self.names[-1]].append((done, total))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Keep every cache file in the test's folder, even one written without ``cache_dir``."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def clusters() -> EmbeddingMatrix:
    return cluster_matrix()


@pytest.fixture(scope="module")
def umap_map(clusters, tmp_path_factory) -> tuple[Projection, Stages, Path]:
    """The default (UMAP 2D, seed 0) map of the cluster matrix, its progress, its cache folder."""
    stages = Stages()
    cache_dir = tmp_path_factory.mktemp("projections")
    result = project(clusters, cache_dir=cache_dir, progress=stages)
    return result, stages, cache_dir


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
    assert record["init"] == "pca"


def test_every_stage_is_named_in_order(umap_map):
    stages = umap_map[1]
    assert stages.names == [
        "neighbour graph (exact, 300 rows)",
        "PCA to 2 dims (the layout's start)",
        "loading umap-learn",
        "UMAP layout",
    ]
    assert stages.units[stages.names.index("UMAP layout")] == "epochs"


def test_each_stage_counts_from_zero_up_to_its_own_total(umap_map):
    stages = umap_map[1]
    for name in ("neighbour graph (exact, 300 rows)", "UMAP layout"):
        steps = stages.counts[name]
        total = steps[0][1]
        assert steps[0] == (0, total), name
        assert steps[-1] == (total, total), name
        done = [d for d, _ in steps]
        assert done == sorted(done), f"{name}: progress went backwards"
    assert stages.counts["UMAP layout"][-1] == (500, 500)  # umap-learn's epochs at 300 rows
    assert len(stages.counts["UMAP layout"]) > 3, "expected reports between epochs"


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


def test_3d_umap_map_of_two_column_rows_is_finite(tmp_path):
    rng = np.random.default_rng(6)
    narrow = EmbeddingMatrix(
        rng.standard_normal((40, 2)).astype(np.float32), tuple(f"w{i}" for i in range(40))
    )
    result = project(narrow, ProjectionOptions(dims=3, metric="euclidean"), cache_dir=tmp_path)
    assert result.coords.shape == (40, 3)
    assert np.isfinite(result.coords).all()
    assert np.ptp(result.coords, axis=0).min() > 0


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


def mixed_matrix() -> EmbeddingMatrix:
    """25 rows a reader of Chinese wants (好, 中国, 乘客, ...) among Latin words, punctuation,
    Japanese forms (乗客, 駅) and marked twins (##好)."""
    chinese = list("好坏上下左右东西南北天地人和山水火木金土日月") + ["中国", "乘客"]
    others = ["good", "bad", "##ing", "，", "。", "乗客", "駅", "##好", "##中国", "the", "of"]
    vocab = tuple(chinese + others)
    vectors = np.random.default_rng(1).standard_normal((len(vocab), 8)).astype(np.float32)
    return EmbeddingMatrix(vectors, vocab, {"method": "input"})


def test_a_chinese_map_shows_only_chinese_rows_and_samples_among_them(tmp_path):
    from embedgen.tokens import chinese_rows

    matrix = mixed_matrix()
    chinese = np.flatnonzero(chinese_rows(matrix.vocab))
    assert 0 < len(chinese) < matrix.shape[0]
    whole = project(
        matrix, ProjectionOptions(reducer=Reducer.PCA, chinese_only=True), cache_dir=tmp_path
    )
    np.testing.assert_array_equal(whole.rows, chinese)
    assert "乗客" not in {matrix.vocab[r] for r in whole.rows}  # a Japanese form
    assert "乘客" in {matrix.vocab[r] for r in whole.rows}
    sampled = project(
        matrix,
        ProjectionOptions(reducer=Reducer.PCA, chinese_only=True, max_rows=10),
        cache_dir=tmp_path,
    )
    assert len(sampled.rows) == 10 and set(sampled.rows) <= set(chinese)
    everything = project(matrix, ProjectionOptions(reducer=Reducer.PCA), cache_dir=tmp_path)
    assert len(everything.rows) == matrix.shape[0]
    off, on = (ProjectionOptions(reducer=Reducer.PCA, chinese_only=c) for c in (False, True))
    assert cache_path(matrix, off, tmp_path) != cache_path(matrix, on, tmp_path)


def test_a_chinese_map_of_a_matrix_without_chinese_rows_says_so(tmp_path):
    latin = EmbeddingMatrix(np.ones((3, 4), np.float32), ("a", "b", "c"), {"method": "input"})
    with pytest.raises(BadConfig, match="no Chinese rows.*untick 'Chinese rows only'"):
        project(
            latin, ProjectionOptions(reducer=Reducer.PCA, chinese_only=True), cache_dir=tmp_path
        )


# ---- cancel --------------------------------------------------------------------------------


def test_cancel_before_start_raises_cancelled_and_caches_nothing(clusters, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        project(clusters, PCA_2D, cache_dir=tmp_path, cancel=cancel)
    assert not list(Path(tmp_path).glob("*.npy"))


@pytest.fixture(scope="module")
def wide() -> EmbeddingMatrix:
    """Wider than ``pca_first`` (50), so a UMAP map of it goes through every stage."""
    return cluster_matrix(rows_per_cluster=40, dims=64, seed=2)


WIDE_STAGES = ["PCA to 50 dims", "neighbour graph", "loading umap-learn", "UMAP layout"]


@pytest.mark.parametrize("stage", WIDE_STAGES)
def test_cancel_in_each_stage_stops_there_and_caches_nothing(wide, tmp_path, stage):
    import numba

    threads = numba.get_num_threads()
    cancel = threading.Event()
    stages = Stages(cancel_at=stage, cancel=cancel)
    with pytest.raises(Cancelled, match="The map was cancelled"):
        project(wide, cache_dir=tmp_path, progress=stages, cancel=cancel)
    assert stages.names[-1].startswith(stage), f"went on to {stages.names[-1]!r} after cancel"
    assert not list(tmp_path.glob("*.npy"))
    assert numba.get_num_threads() == threads, "numba thread count was not restored"


def test_a_map_of_the_wide_matrix_names_all_its_stages(wide, tmp_path):
    stages = Stages()
    result = project(wide, cache_dir=tmp_path, progress=stages)
    assert [next(s for s in WIDE_STAGES if n.startswith(s)) for n in stages.names] == WIDE_STAGES
    assert stages.counts["PCA to 50 dims"][-1] == (240, 240)  # rows summed, then projected
    assert result.coords.shape == (120, 2)


def test_cancel_between_layout_epochs_stops_the_layout(clusters, tmp_path):
    cancel = threading.Event()
    stages = Stages()

    def cancel_after_ten_epochs(done: int, total: int) -> None:
        stages(done, total)
        if stages.names[-1] == "UMAP layout" and done >= 10:
            cancel.set()

    cancel_after_ten_epochs.set_stage = stages.set_stage  # type: ignore[attr-defined]
    with pytest.raises(Cancelled):
        project(clusters, cache_dir=tmp_path, progress=cancel_after_ten_epochs, cancel=cancel)
    done, total = stages.counts["UMAP layout"][-1]
    assert 10 <= done < total
    assert not list(tmp_path.glob("*.npy"))


def test_a_cancelled_layout_leaves_other_threads_progress_bars_working(clusters, tmp_path):
    import io

    from tqdm import tqdm

    cancel = threading.Event()
    stages = Stages(cancel_at="UMAP layout", cancel=cancel)
    with pytest.raises(Cancelled):
        project(clusters, cache_dir=tmp_path, progress=stages, cancel=cancel)
    other = threading.Thread(target=lambda: list(tqdm(range(3), file=io.StringIO())))
    other.start()
    other.join(10)
    assert not other.is_alive(), "tqdm's lock was left held by the cancelled layout"


@pytest.fixture()
def approximate_knn(monkeypatch):
    """Lower the exact-graph limit so a small matrix takes pynndescent's (child process) path."""
    monkeypatch.setattr(projection_module, "_EXACT_KNN_MAX_ROWS", 100)


def test_above_the_exact_limit_the_graph_comes_from_a_child_process(
    approximate_knn, clusters, tmp_path
):
    stages = Stages()
    result = project(clusters, cache_dir=tmp_path, progress=stages)
    assert result.details["knn"] == "pynndescent"
    assert "neighbour graph (approximate, 300 rows, pynndescent)" in stages.names
    within, across = within_and_across(result.coords, cluster_labels())
    assert within < 0.5 * across, f"within-cluster {within:.2f} vs across {across:.2f}"


def test_the_approximate_graphs_scratch_folder_lies_under_embedgen_home_tmp(home, monkeypatch):
    """Not in the system's temporary folder: what a killed server leaves under
    $EMBEDGEN_HOME/tmp is removed at the next start (atomic.remove_leftovers)."""
    from embedgen.atomic import TEMP_PREFIX

    seen: list[Path] = []

    class Child:  # the child process, run in place: it records where its input lies
        exitcode = 0

        def __init__(self, target, args, name, daemon):
            self.args = args

        def start(self) -> None:
            source, target, k, _ = self.args
            seen.append(Path(source))
            n = len(np.load(source))
            np.savez(target, indices=np.zeros((n, k)), distances=np.zeros((n, k)))

        def is_alive(self) -> bool:
            return False

    class Context:
        Process = Child

    monkeypatch.setattr(projection_module.multiprocessing, "get_context", lambda method: Context())
    indices, _ = projection_module._approximate_knn(np.ones((20, 4)), 5, 0, None)
    assert indices.shape == (20, 5)
    (source,) = seen
    assert source.parent.parent == home / "tmp"
    assert source.parent.name.startswith(TEMP_PREFIX)
    assert not source.parent.exists()


def test_cancel_terminates_the_approximate_graphs_child_process(
    approximate_knn, clusters, tmp_path
):
    import multiprocessing

    cancel = threading.Event()
    stages = Stages(cancel_at="neighbour graph", cancel=cancel)
    with pytest.raises(Cancelled):
        project(clusters, cache_dir=tmp_path, progress=stages, cancel=cancel)
    assert not [c for c in multiprocessing.active_children() if c.name == "embedgen-knn"]
    assert not list(tmp_path.glob("*.npy"))


# ---- the row cap and rows left out of the sample ---------------------------------------------


def test_maps_are_capped_at_20000_rows_by_default():
    assert ProjectionOptions().max_rows == DEFAULT_MAX_ROWS == 20_000


def test_estimate_grows_with_rows_and_the_cap_bounds_it():
    capped = estimate_seconds(250_000)
    everything = estimate_seconds(250_000, ProjectionOptions(max_rows=None))
    assert capped == estimate_seconds(DEFAULT_MAX_ROWS) < everything
    assert estimate_seconds(1_000) < estimate_seconds(5_000)


def test_sampled_rows_are_placed_at_their_own_points(clusters, tmp_path):
    options = ProjectionOptions(reducer=Reducer.PCA, max_rows=150)
    result = project(clusters, options, cache_dir=tmp_path)
    some = result.rows[[0, 7, 149]]
    np.testing.assert_array_equal(place_rows(clusters, result, some), result.coords[[0, 7, 149]])


def test_rows_left_out_of_the_sample_are_placed_among_their_cluster(clusters, tmp_path):
    result = project(clusters, ProjectionOptions(max_rows=150), cache_dir=tmp_path)
    left_out = np.setdiff1d(np.arange(300), result.rows)
    assert len(left_out) == 150
    placed = place_rows(clusters, result, left_out)
    labels = cluster_labels()
    centres = np.stack([result.coords[labels[result.rows] == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(np.linalg.norm(placed[:, None] - centres[None], axis=-1), axis=1)
    np.testing.assert_array_equal(nearest, labels[left_out])


def test_map_points_add_only_the_highlighted_rows_the_sample_left_out(clusters, tmp_path):
    options = ProjectionOptions(reducer=Reducer.PCA, max_rows=100)
    result = project(clusters, options, cache_dir=tmp_path)
    inside, outside = int(result.rows[5]), int(np.setdiff1d(np.arange(300), result.rows)[0])
    coords, rows, placed = map_points(clusters, result, [inside, outside])
    assert placed == 1 and len(rows) == len(coords) == 101
    np.testing.assert_array_equal(rows[:100], result.rows)
    assert rows[100] == outside
    np.testing.assert_array_equal(coords[100], place_rows(clusters, result, [outside])[0])
    assert map_points(clusters, result, [inside])[2] == 0


def test_placing_a_row_outside_the_matrix_is_bad_config(clusters, tmp_path):
    result = project(clusters, PCA_2D, cache_dir=tmp_path)
    with pytest.raises(BadConfig, match=r"\[0, 300\)"):
        place_rows(clusters, result, [300])


def test_warm_up_compiles_without_writing_a_cache(home):
    assert warm_up(seed=0) > 0
    assert not home.exists()
