"""2D/3D maps of an embedding matrix (PCA or UMAP) for the browser's scatter plot, cached on disk.

The UMAP path is: rows -> (cosine) L2-normalise -> PCA to ``pca_first`` dims -> exact or
approximate k-nearest-neighbour graph -> UMAP layout. Each arrow is a stage that reports
progress and checks ``cancel``. Results are cached under
``$EMBEDGEN_HOME/cache/projections`` by the matrix fingerprint and the options, so reopening a
map in the browser costs milliseconds.

umap-learn (and numba behind it) is imported only when a UMAP map is computed: importing it
takes seconds, and compiling its layout code the first time in a process takes more.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgen import atomic
from embedgen.errors import BadConfig, Cancelled
from embedgen.fields import Choice, check, setting
from embedgen.matrix import EmbeddingMatrix
from embedgen.paths import cache_dir
from embedgen.postprocess import pca
from embedgen.progress import ProgressFn, check_cancel

log = logging.getLogger(__name__)

# Bump when the computation changes in a way that makes old cache files wrong.
_CACHE_VERSION = 1
# Up to this many (distinct) rows the kNN graph is exact: brute force in PCA space takes ~2 s
# for 21k rows on 2 cores and needs no numba compile, where pynndescent's first call in a
# process compiles for ~30 s. Above it, brute force grows as rows^2 and pynndescent wins.
_EXACT_KNN_MAX_ROWS = 32_768
# Below this many distinct rows UMAP is not meaningful; the map falls back to PCA.
_UMAP_MIN_ROWS = 4


class Reducer(Choice):
    """How the map is made."""

    PCA = "pca", "linear, exact, instant; clusters overlap"
    UMAP = "umap", "non-linear neighbourhood layout; slower, shows local structure"


class Metric(enum.StrEnum):
    """What "near" means on the map."""

    COSINE = "cosine"
    CORRELATION = "correlation"
    EUCLIDEAN = "euclidean"


@dataclass(frozen=True)
class ProjectionOptions:
    """What map to make; ``seed=None`` lets UMAP run in parallel, but each run differs."""

    reducer: Reducer = setting(Reducer.UMAP, "reducer", choices=Reducer)
    dims: int = setting(2, "dimensions", low=2, high=3, help="a map has 2 or 3")
    n_neighbors: int = setting(
        15, "UMAP neighbours", low=2, high=1000, help="5 to 50 is usual; 15 is the default"
    )
    min_dist: float = setting(0.1, "UMAP minimum distance", low=0, high=1)
    metric: Metric = setting(Metric.COSINE, "metric", choices=Metric)
    pca_first: int | None = setting(
        50,
        "PCA dims before UMAP",
        low=2,
        high=4096,
        help="PCA to this many dims before UMAP, for speed; None skips it",
    )
    seed: int | None = setting(
        0,
        "seed",
        low=0,
        high=2**32 - 1,
        whole=True,
        help="fixed: reproducible, but UMAP's layout runs single-threaded; None: parallel",
    )
    max_rows: int | None = setting(
        None,
        "rows on the map",
        low=1,
        high=10**9,
        whole=True,
        help="None: all rows; else a seeded random sample",
    )

    def __post_init__(self) -> None:
        check(self)

    def params(self) -> dict[str, Any]:
        """The options that shape the map (UMAP-only ones left out for PCA), JSON-ready."""
        out: dict[str, Any] = {
            "reducer": self.reducer.value,
            "dims": self.dims,
            "metric": str(self.metric),
            "max_rows": self.max_rows,
            "seed": self.seed,
        }
        if self.reducer is Reducer.UMAP:
            out.update(
                n_neighbors=self.n_neighbors,
                min_dist=float(self.min_dist),
                pca_first=self.pca_first,
            )
        return out


@dataclass(frozen=True)
class Projection:
    """Map coordinates: ``coords[j]`` is the point of matrix row ``rows[j]``.

    ``rows`` is every row in order unless ``options.max_rows`` sampled fewer. ``details`` says
    what was actually done (neighbours after clamping, kNN method, epochs, fallbacks).
    """

    coords: npt.NDArray[np.float32]
    options: ProjectionOptions
    seconds: float
    from_cache: bool
    rows: npt.NDArray[np.int64] = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    details: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """A JSON-ready record: reducer, dims, params, seed, seconds and what was done."""
        params = self.options.params()
        return {
            "reducer": params.pop("reducer"),
            "dims": params.pop("dims"),
            "seed": params.pop("seed"),
            "params": params,
            "rows": int(self.coords.shape[0]),
            "seconds": round(self.seconds, 3),
            "from_cache": self.from_cache,
            **self.details,
        }


# --------------------------------------------------------------------------------------------
# Fingerprint and cache
# --------------------------------------------------------------------------------------------


def fingerprint(matrix: EmbeddingMatrix) -> str:
    """Return a sha256 hex digest of the matrix vectors (bytes, shape, dtype) and vocabulary."""
    vectors = np.ascontiguousarray(matrix.vectors)
    h = hashlib.sha256()
    h.update(f"{vectors.dtype.str}|{vectors.shape}|".encode())
    h.update(memoryview(vectors).cast("B"))
    h.update(json.dumps(list(matrix.vocab), ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _options_hash(options: ProjectionOptions) -> str:
    key = {
        "cache_version": _CACHE_VERSION,
        "umap_learn": _version("umap-learn") if options.reducer is Reducer.UMAP else None,
        **options.params(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def cache_path(
    matrix: EmbeddingMatrix, options: ProjectionOptions, cache_dir: Path | None = None
) -> Path:
    """Return the ``.npy`` file a projection of ``matrix`` with ``options`` is cached in."""
    return _cache_file(fingerprint(matrix), options, cache_dir)


def _cache_file(print_: str, options: ProjectionOptions, cache_dir: Path | None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{print_}-{_options_hash(options)}.npy"


def default_cache_dir() -> Path:
    """``$EMBEDGEN_HOME/cache/projections``."""
    return cache_dir() / "projections"


def _load_cached(path: Path, n_rows: int, dims: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached coords and record, or None when absent; a broken pair is logged and ignored."""
    record_path = path.with_suffix(".json")
    if not path.exists():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if coords.shape != (n_rows, dims) or coords.dtype != np.float32:
            raise ValueError(f"shape {coords.shape} {coords.dtype}, expected ({n_rows}, {dims})")
        if not np.isfinite(coords).all():
            raise ValueError("non-finite coordinates")
        if not isinstance(record, dict):
            raise ValueError("record is not a JSON object")
    except (OSError, ValueError, EOFError) as exc:
        log.warning("Ignoring unreadable projection cache %s (%s); recomputing.", path.name, exc)
        return None
    return coords, record


def _save_cached(path: Path, coords: np.ndarray, record: dict[str, Any]) -> None:
    try:
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, coords, allow_pickle=False)
        atomic.write_json(path.with_suffix(".json"), record)
    except OSError as exc:  # a read-only cache must not lose the map that was just made
        log.warning("Could not write projection cache %s (%s).", path, exc)


# --------------------------------------------------------------------------------------------
# Projecting
# --------------------------------------------------------------------------------------------


def project(
    matrix: EmbeddingMatrix,
    options: ProjectionOptions | None = None,
    *,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Projection:
    """Return a 2D/3D map of the matrix rows, from the cache when it holds one.

    Progress counts steps: 0 at the start, 1 after PCA, 2 after the neighbour graph, then one
    step per UMAP epoch, and ``total`` when the map is saved (a PCA map has 2 steps, a cache
    hit 1). ``cancel`` is checked between stages and between epochs; a cancelled map raises
    :class:`Cancelled` and caches nothing.
    """
    options = options or ProjectionOptions()
    report = progress or (lambda done, total: None)
    started = time.perf_counter()

    rows = _select_rows(matrix.shape[0], options)
    matrix_print = fingerprint(matrix)
    path = _cache_file(matrix_print, options, cache_dir)
    cached = _load_cached(path, len(rows), options.dims)
    if cached is not None:
        coords, record = cached
        report(1, 1)
        log.info("Loaded %d-row %s map from cache %s.", len(rows), options.reducer, path.name)
        return Projection(
            coords=coords,
            options=options,
            seconds=time.perf_counter() - started,
            from_cache=True,
            rows=rows,
            details=record.get("details", {}),
        )

    vectors = matrix.vectors if len(rows) == matrix.shape[0] else matrix.vectors[rows]
    _check_finite(vectors, rows, matrix.vocab)
    coords, details = _compute(vectors, options, report, cancel)
    check_cancel(cancel, "The map")
    seconds = time.perf_counter() - started
    details["computed_seconds"] = round(seconds, 3)
    projection = Projection(
        coords=coords,
        options=options,
        seconds=seconds,
        from_cache=False,
        rows=rows,
        details=details,
    )
    _save_cached(
        path,
        coords,
        {"fingerprint": matrix_print, "record": projection.as_record(), "details": details},
    )
    total = details["steps"]
    report(total, total)
    return projection


def warm_up(seed: int | None = 0) -> float:
    """Compile UMAP's numba code on a tiny random matrix; return the seconds it took.

    The first UMAP map in a process pays for importing umap-learn and compiling its layout
    (seconds; see BENCHMARKS.md). An app can call this in a background thread at start-up so
    the user's first map does not. A fixed seed and ``seed=None`` compile different layouts.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, 8)).astype(np.float32)
    _compute(vectors, ProjectionOptions(seed=seed), lambda done, total: None, None)
    return time.perf_counter() - started


def _select_rows(n: int, options: ProjectionOptions) -> npt.NDArray[np.int64]:
    if options.max_rows is None or options.max_rows >= n:
        return np.arange(n, dtype=np.int64)
    # The sample is seeded even when the layout is not, so a map keeps its points.
    rng = np.random.default_rng(options.seed if options.seed is not None else 0)
    return np.sort(rng.choice(n, size=options.max_rows, replace=False)).astype(np.int64)


def _check_finite(vectors: np.ndarray, rows: np.ndarray, vocab: tuple[str, ...]) -> None:
    if vectors.shape[0] == 0:
        raise BadConfig("The matrix has no rows; there is nothing to plot.")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        first = int(rows[np.flatnonzero(bad)[0]])
        raise BadConfig(
            f"{int(bad.sum())} of {len(rows)} rows contain NaN or infinite values "
            f"(first: row {first}, '{vocab[first]}'). Rebuild the matrix, or drop those rows, "
            "before plotting."
        )


def _compute(
    vectors: np.ndarray,
    options: ProjectionOptions,
    report: ProgressFn,
    cancel: threading.Event | None,
) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """Coords for ``vectors`` (already checked finite) and a record of what was done.

    Longer than most functions here on purpose: it reads as the map's stages in order
    (distinct rows, PCA, kNN graph, layout), each timed, reported and cancellable.
    """
    distinct, inverse = _distinct_rows(vectors)
    n = distinct.shape[0]
    details: dict[str, Any] = {"distinct_rows": n, "reducer_used": options.reducer.value}
    if n < len(vectors):
        log.info("%d rows are exact duplicates; they share a point.", len(vectors) - n)

    use_umap = options.reducer is Reducer.UMAP
    if use_umap and n < _UMAP_MIN_ROWS:
        log.info("Only %d distinct rows: UMAP needs %d; using PCA.", n, _UMAP_MIN_ROWS)
        use_umap = False
        details["reducer_used"] = Reducer.PCA.value
        details["fallback"] = f"{n} distinct rows < {_UMAP_MIN_ROWS}"

    n_epochs = (500 if n <= 10_000 else 200) if use_umap else 0  # umap-learn's own defaults
    steps = 3 + n_epochs if use_umap else 2
    details["steps"] = steps
    report(0, steps)
    check_cancel(cancel, "The map")

    x = _prepare(distinct, options.metric)
    stage_seconds: dict[str, float] = {}
    details["stage_seconds"] = stage_seconds
    clock = time.perf_counter()
    if not use_umap:
        coords = _pca_coords(x, options.dims, details)
        stage_seconds["pca"] = round(time.perf_counter() - clock, 3)
        report(1, steps)
        return coords[inverse], details

    if options.pca_first is not None and x.shape[1] > options.pca_first:
        x = _pca_coords(x, options.pca_first, details)
    stage_seconds["pca"] = round(time.perf_counter() - clock, 3)
    report(1, steps)
    check_cancel(cancel, "The map")

    n_neighbors = options.n_neighbors
    if n_neighbors >= n:
        n_neighbors = n - 1
        log.info(
            "n_neighbors %d is too large for %d distinct rows; using %d.",
            options.n_neighbors, n, n_neighbors,
        )  # fmt: skip
    details["n_neighbors_used"] = n_neighbors
    clock = time.perf_counter()
    knn = _knn(x, n_neighbors, options.seed, details)
    stage_seconds["knn"] = round(time.perf_counter() - clock, 3)
    report(2, steps)
    check_cancel(cancel, "The map")

    clock = time.perf_counter()
    coords = _umap_layout(x, knn, n_neighbors, n_epochs, options, details, report, cancel)
    stage_seconds["layout"] = round(time.perf_counter() - clock, 3)  # incl. umap-learn import
    report(steps - 1, steps)
    return coords[inverse], details


def _distinct_rows(vectors: np.ndarray) -> tuple[np.ndarray, npt.NDArray[np.intp]]:
    """Distinct rows (first-seen order) and, for every row, the index of its distinct row.

    Identical vectors get one point: UMAP would otherwise tie them into a clump of their own.
    """
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    # One opaque item per row: comparing rows as bytes is much faster than np.unique(axis=0).
    keys = arr.view(np.dtype((np.void, arr.dtype.itemsize * arr.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if len(first) == len(arr):
        return arr, np.arange(len(arr))
    order = np.argsort(first)  # keep the matrix's row order among distinct rows
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return arr[first[order]], rank[inverse.ravel()]


def _prepare(x: np.ndarray, metric: str) -> npt.NDArray[np.float32]:
    """Rows made ready for Euclidean geometry under ``metric``.

    For cosine (and correlation) the rows are scaled to unit length: there, Euclidean distance
    orders neighbours exactly as cosine does, and PCA - which keeps Euclidean distances best -
    then keeps cosine neighbours too (cosine on the centred PCA output would not).
    """
    x = np.asarray(x, dtype=np.float32)
    if metric == "euclidean":
        return x
    if metric == "correlation":
        x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # a zero row stays at the origin
    return (x / norms).astype(np.float32)


def _pca_coords(x: np.ndarray, dims: int, details: dict[str, Any]) -> npt.NDArray[np.float32]:
    """``x`` on its top ``dims`` principal axes, zero-padded when the matrix has fewer."""
    n, d = x.shape
    keep = min(dims, n, d)
    out = np.zeros((n, dims), dtype=np.float32)
    if n > 1:
        out[:, :keep] = pca(x, keep)
    total = float(x.var(axis=0, dtype=np.float64).sum())
    kept = float(out.var(axis=0, dtype=np.float64).sum())
    share = kept / total if total > 0 else 1.0
    details[f"pca_{dims}_variance_kept"] = round(share, 4)
    log.info("PCA %d -> %d dims kept %.1f%% of the variance.", d, dims, 100 * share)
    return out


def _knn(
    x: np.ndarray, k: int, seed: int | None, details: dict[str, Any]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], Any]:
    """(indices, distances, search index or None) of each row's ``k`` nearest rows, self first."""
    started = time.perf_counter()
    if x.shape[0] <= _EXACT_KNN_MAX_ROWS:
        indices, distances = _exact_knn(x, k)
        index = None
        details["knn"] = "exact"
    else:
        from sklearn.utils import check_random_state
        from umap.umap_ import nearest_neighbors

        indices, distances, index = nearest_neighbors(
            x,
            k,
            "euclidean",
            {},
            False,
            check_random_state(seed),
            low_memory=True,
            n_jobs=1 if seed is not None else -1,
        )
        details["knn"] = "pynndescent"
    log.info("%s %d-NN graph of %d rows in %.1f s.", details["knn"], k, len(x),
             time.perf_counter() - started)  # fmt: skip
    return indices, distances, index


def _exact_knn(x: np.ndarray, k: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Brute-force Euclidean ``k``-NN (self included, first), in row blocks on all cores."""
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    indices = np.empty((n, k), dtype=np.int32)
    distances = np.empty((n, k), dtype=np.float32)
    block = max(1, min(n, (1 << 24) // n))  # ~64 MB of float32 scores per block

    def fill(start: int) -> None:
        stop = min(n, start + block)
        # |a-b|^2 - |a|^2: the row's own |a|^2 does not change its neighbour order.
        scores = x[start:stop] @ x.T
        scores *= -2.0
        scores += sq[None, :]
        local = np.arange(stop - start)
        scores[local, start + local] = -np.inf  # self first, even against exact duplicates
        part = np.argpartition(scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(part_scores, axis=1, kind="stable")
        nearest = np.take_along_axis(part, order, axis=1)
        d2 = np.take_along_axis(part_scores, order, axis=1) + sq[start:stop, None]
        d2[:, 0] = 0.0
        indices[start:stop] = nearest
        distances[start:stop] = np.sqrt(np.maximum(d2, 0.0))

    # argpartition dominates and releases the GIL, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(fill, range(0, n, block)))
    return indices, distances


class _EpochHook:
    """A file for umap-learn's tqdm bar: reads 'done/total' epochs, reports them, checks cancel.

    umap-learn offers no epoch callback; its ``tqdm_kwds`` are the cheap, public way in. Raising
    here stops the layout between two epochs.
    """

    _PATTERN = re.compile(r"(\d+)/(\d+)")

    def __init__(self, report: ProgressFn, steps: int, cancel: threading.Event | None) -> None:
        self.report = report
        self.steps = steps
        self.cancel = cancel
        self.cancelled = False

    def write(self, text: str) -> int:
        if self.cancelled:
            return len(text)  # tqdm's close after the raise must not raise again
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
            raise Cancelled("The map was cancelled.")
        found = self._PATTERN.findall(text)
        if found:
            done, _ = found[-1]
            self.report(min(2 + int(done), self.steps - 1), self.steps)
        return len(text)

    def flush(self) -> None:
        pass


def _umap_layout(
    x: np.ndarray,
    knn: tuple[np.ndarray, np.ndarray, Any],
    n_neighbors: int,
    n_epochs: int,
    options: ProjectionOptions,
    details: dict[str, Any],
    report: ProgressFn,
    cancel: threading.Event | None,
) -> npt.NDArray[np.float32]:
    import numba
    import umap

    hook = _EpochHook(report, 3 + n_epochs, cancel)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        n_components=options.dims,
        min_dist=float(options.min_dist),
        metric="euclidean",  # on the unit-length (cosine) rows, see _prepare
        n_epochs=n_epochs,
        low_memory=True,
        random_state=options.seed,
        n_jobs=1 if options.seed is not None else -1,  # umap-learn forces 1 with a seed anyway
        precomputed_knn=knn,
        verbose=False,
        tqdm_kwds={
            "disable": False,
            "file": hook,
            "bar_format": "{n}/{total}",
            "mininterval": 0.1,
        },
    )
    details.update(n_epochs=n_epochs, threads=1 if options.seed is not None else os.cpu_count())
    threads = numba.get_num_threads()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Expected with a precomputed exact graph: no search index, so no transform().
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
            coords = reducer.fit_transform(x)
    finally:
        numba.set_num_threads(threads)  # umap-learn resets it only when fit returns
    log.info("UMAP layout (%d epochs) in %.1f s.", n_epochs, time.perf_counter() - started)
    coords = np.asarray(coords, dtype=np.float32)
    if not np.isfinite(coords).all():
        # umap-learn leaves rows with no neighbour edge at NaN; put them at the map's centre.
        lost = ~np.isfinite(coords).all(axis=1)
        log.warning("%d rows lost every neighbour edge; placed at the centre.", int(lost.sum()))
        coords[lost] = np.nanmean(coords[~lost], axis=0) if (~lost).any() else 0.0
    return coords


__all__ = [
    "Projection",
    "ProjectionOptions",
    "Reducer",
    "cache_path",
    "default_cache_dir",
    "fingerprint",
    "project",
    "warm_up",
]
