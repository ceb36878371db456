"""2D/3D maps of an embedding matrix (PCA or UMAP) for the browser's scatter plot, cached on disk.

The UMAP path is: rows -> (at most ``max_rows``, a seeded sample) -> (cosine) L2-normalise ->
PCA to ``pca_first`` dims -> k-nearest-neighbour graph -> UMAP layout. Each arrow is a stage
named with :func:`embedgen.progress.stage`, reports its own progress and stops within about
two seconds of ``cancel`` being set. Results are cached under ``$EMBEDGEN_HOME/cache/projections``
by the matrix fingerprint and the options, so reopening a map in the browser costs milliseconds.
The cache is bounded (:class:`MapCache`): the operator's ``map_cache_mb`` (default 1024 MiB; 0
switches it off) caps its size, and the least recently used maps (by the time of their record,
touched on every use) go first when a new one is saved; a map bigger than the whole budget is
not kept.

Bounded cost, decided by measurement (``bench/bench_map.py``, ``bench/results/map.md``; 2 shared
cores, 21,000 rows of multilingual-e5-small's input embeddings and structured stand-ins):

- **A row cap** (``max_rows``, default 20,000): a seeded random sample of the rows is mapped, in
  10.9-14.6 s cold and 8.7-12.8 s warm (medians, 1-minute load 1.1-2.5). Rows a user highlights
  that fell outside it are placed by :func:`place_rows`, at the mean map point of their 5
  nearest sampled rows in the matrix's own space: for 1,000 held-out e5 rows that point was a
  median 0.18 (90th percentile 0.64) of the typical distance between two map points away from
  where a map of all rows put them, against 1.0 for a random row. The whole 250k-row vocabulary
  of an XLM-R model takes minutes (:func:`estimate_seconds`), so the app asks first.
- **Our own PCA, in row blocks** with cancel checked between blocks (``postprocess.pca`` is one
  uninterruptible call), in torch: numpy's OpenBLAS threads, spinning beside torch's pool,
  made a 20,000 x 384 PCA take 2.7 s instead of 0.2 s and slowed the next stage too.
- **Exact kNN with torch** (matmul + ``topk``, blocks of rows, cancel checked per block) up to
  32,768 rows: no numba compile, and ``torch.topk`` is ~7x faster than ``np.argpartition``
  (0.08 s vs 0.54 s for a 1,000 x 21,000 block); 1.3-2.9 s for 20,000 rows. Above that limit,
  pynndescent builds an approximate graph in a **child process** that cancel terminates: its
  search is one numba call with no hook, and its first call compiles for ~30 s.
- **PCA initialisation instead of spectral**: umap-learn's spectral init has no hook and grows
  faster than the graph (0.4 s at 20,000 e5 rows, 3.1 s at 60,000; the issue saw minutes on a
  full vocabulary, not measured here). Starting from the first PCA coordinates (Kobak &
  Linderman 2021 recommend it for global structure) keeps as much: 15-NN kept 0.076 vs
  0.076, trustworthiness 0.686 vs 0.686 at 20,000 rows. What umap-learn still runs without a
  hook is its fuzzy graph, O(rows x neighbours): 0.2 s at 60,000 rows. Cancel took at most
  0.12 s in every stage.
- **numba's on-disk cache for umap-learn's kernels** (``Dispatcher.enable_caching``; umap-learn
  declares ``cache=True`` on one of them only): the first fit in a process compiled for 12 s,
  with the cache 0.1 s, so cold is now ~2 s above warm (importing umap-learn). The very first
  map after installing still compiles (29-35 s).
- 200 epochs (umap-learn's default above 10,000 rows; 500 below) and a fixed seed (one thread):
  100 epochs would save 3.5 s of the 7 s layout but keep less (15-NN 0.068 vs 0.076).

umap-learn (and numba behind it) is imported only when a UMAP map is computed.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import multiprocessing
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgen import atomic
from embedgen.budget import MIB, Entry, evict, touch
from embedgen.errors import BadConfig, Cancelled
from embedgen.fields import Choice, check, setting
from embedgen.matrix import EmbeddingMatrix
from embedgen.paths import cache_dir, tmp_dir
from embedgen.progress import ProgressFn, check_cancel, stage
from embedgen.settings import operator_settings
from embedgen.tokens import chinese_rows

log = logging.getLogger(__name__)

# Bump when the computation changes in a way that makes old cache files wrong.
_CACHE_VERSION = 2  # 2: PCA initialisation, torch kNN
# Up to this many (distinct) rows the kNN graph is exact: brute force in PCA space (torch)
# takes 2-4 s for 20k rows on 2 cores and needs no numba compile, where pynndescent's first
# call in a process compiles for ~30 s. Above it, brute force grows as rows^2 and pynndescent
# (in a child process, so that cancel can stop it) wins.
_EXACT_KNN_MAX_ROWS = 32_768
# The default row cap: the first map of 20,000 rows takes 11-15 s cold on 2 cores (map.md).
DEFAULT_MAX_ROWS = 20_000
# Rows per block in PCA and the exact kNN graph: the unit of work between two cancel checks.
_BLOCK_ROWS = 4096
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
        DEFAULT_MAX_ROWS,
        "rows on the map",
        low=1,
        high=10**9,
        whole=True,
        help="a seeded random sample of this many rows when the matrix has more; None: all rows",
    )
    chinese_only: bool = setting(
        False,
        "Chinese rows only",
        help="map only the rows a reader of Chinese wants (tokens.chinese_rows: CJK characters, "
        "no Japanese form, no ##好 or ▁好 beside 好)",
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
        if self.chinese_only:  # absent when off, so maps cached before the option keep their key
            out["chinese_only"] = True
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


def map_budget_bytes() -> int:
    """The map cache's size limit in bytes: the operator's ``map_cache_mb``."""
    return int(operator_settings().map_cache_mb * MIB)


class MapCache:
    """Cached maps in ``root`` (default :func:`default_cache_dir`), at most ``budget`` bytes
    (default :func:`map_budget_bytes`; 0 switches the cache off).

    A map is two files, ``<matrix>-<options>.npy`` (coords) and ``.json`` (its record); the
    record's time is the map's last use, touched on every cache hit.
    """

    _lock = threading.Lock()  # eviction lists the folder; one at a time per process

    def __init__(self, root: Path | None = None, budget: int | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.budget = map_budget_bytes() if budget is None else budget

    def entries(self) -> list[Entry]:
        """The cached maps (coords file, size, last use), in no particular order."""
        found = []
        for coords in self.root.glob("*.npy"):
            if coords.name.startswith(atomic.TEMP_PREFIX):  # a write under way
                continue
            record = coords.with_suffix(".json")
            try:
                size = coords.stat().st_size
            except OSError:  # removed meanwhile
                continue
            try:
                info = record.stat()
                size, used = size + info.st_size, info.st_mtime
            except OSError:
                used = 0.0  # no record: a broken map, first to go
            found.append(Entry(coords, (coords, record), size, used))
        return found

    def make_room(self, keep: Path) -> list[Entry]:
        """Remove the least recently used maps (never ``keep``) until the cache fits its
        budget; return those removed."""
        with self._lock:
            return evict(
                self.entries(),
                self.budget,
                {keep},
                what=("cached map", "cached maps"),
                setting="map_cache_mb",
            )


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
    touch(record_path)  # used: the cache removes it last
    return coords, record


def _save_cached(cache: MapCache, path: Path, coords: np.ndarray, record: dict[str, Any]) -> None:
    """Write the map and its record, then make room; a map bigger than the budget is not kept."""
    text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    size = coords.nbytes + 128 + len(text.encode("utf-8"))  # .npy header: at most 128 bytes
    if size > cache.budget:
        if cache.budget > 0:  # 0: the operator switched the cache off; nothing to say
            log.info(
                "This map needs more than the map cache's %s MiB; it is not kept (map_cache_mb).",
                f"{cache.budget / MIB:,.4g}",
            )
        return
    try:
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, coords, allow_pickle=False)
        atomic.write_text(path.with_suffix(".json"), text)
    except OSError as exc:  # a read-only cache must not lose the map that was just made
        log.warning("Could not write projection cache %s (%s).", path, exc)
        return
    cache.make_room(keep=path)


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
    """Return a 2D/3D map of the matrix rows (a sample of ``options.max_rows``), cached on disk.

    Each stage is named with :func:`embedgen.progress.stage` and reports its own ``(done,
    total)``: "PCA to 50 dims" (rows), "neighbour graph (exact, 20,000 rows)" (rows), "loading
    umap-learn", "UMAP layout" (epochs); a PCA map has one stage, a cache hit "reading the
    cache". ``cancel`` is checked at least every block of rows and every epoch; a cancelled map
    raises :class:`Cancelled` and caches nothing.
    """
    options = options or ProjectionOptions()
    report = progress or (lambda done, total: None)
    started = time.perf_counter()

    rows = _select_rows(matrix, options)
    matrix_print = fingerprint(matrix)
    cache = MapCache(cache_dir)
    path = _cache_file(matrix_print, options, cache_dir)
    cached = _load_cached(path, len(rows), options.dims) if cache.budget > 0 else None
    if cached is not None:
        coords, record = cached
        stage(progress, "reading the cache")
        report(1, 1)
        log.info("Loaded %d-row %s map from cache %s.", len(rows), options.reducer, path.name)
        seconds = time.perf_counter() - started
        return Projection(coords, options, seconds, True, rows, record.get("details", {}))

    check_cancel(cancel, "The map")
    vectors = matrix.vectors if len(rows) == matrix.shape[0] else matrix.vectors[rows]
    _check_finite(vectors, rows, matrix.vocab)
    coords, details = _compute(vectors, options, progress, cancel)
    check_cancel(cancel, "The map")
    seconds = time.perf_counter() - started
    details["computed_seconds"] = round(seconds, 3)
    details["matrix_rows"] = int(matrix.shape[0])
    projection = Projection(
        coords=coords,
        options=options,
        seconds=seconds,
        from_cache=False,
        rows=rows,
        details=details,
    )
    _save_cached(
        cache,
        path,
        coords,
        {"fingerprint": matrix_print, "record": projection.as_record(), "details": details},
    )
    return projection


def warm_up(seed: int | None = 0) -> float:
    """Import umap-learn and load (or compile) its kernels on a tiny matrix; return the seconds.

    With numba's on-disk cache (see the module docstring) this is mostly the import, 2-5 s;
    on a fresh install it also compiles, ~12 s. A fixed seed and ``seed=None`` use different
    layout kernels.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, 8)).astype(np.float32)
    _compute(vectors, ProjectionOptions(seed=seed), None, None)
    return time.perf_counter() - started


def estimate_seconds(n_rows: int, options: ProjectionOptions | None = None) -> float:
    """A rough wall-clock estimate of a first map of ``n_rows`` rows on 2 CPU cores.

    Fitted to bench/results/map.md (PCA and kNN grow with rows and rows^2, the layout with
    rows x epochs); good to a factor of two, for warning before a large map, not for promises.
    """
    options = options or ProjectionOptions()
    n = n_rows if options.max_rows is None else min(n_rows, options.max_rows)
    if options.reducer is Reducer.PCA:
        return 0.5 + n * 2e-5
    epochs = 500 if n <= 10_000 else 200
    knn = 5e-9 * n * n if n <= _EXACT_KNN_MAX_ROWS else 30.0 + 4e-4 * n
    layout = 1.8e-6 * n * epochs
    return 4.0 + n * 3e-5 + knn + layout


def place_rows(
    matrix: EmbeddingMatrix, projection: Projection, rows: npt.ArrayLike, k: int = 5
) -> npt.NDArray[np.float32]:
    """Map coordinates for matrix ``rows``, also those the map's sample left out.

    A sampled row gets its own point; any other row the mean point of its ``k`` nearest
    sampled rows, nearest under the map's metric in the matrix's own space. That puts a
    highlighted token among its neighbours even when ``max_rows`` left it off the map.
    """
    wanted = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.zeros((len(wanted), projection.coords.shape[1]), dtype=np.float32)
    if len(wanted) == 0:
        return out
    if wanted.min() < 0 or wanted.max() >= matrix.shape[0]:
        raise BadConfig(f"Rows to place must be in [0, {matrix.shape[0]}); got {wanted.tolist()}.")
    sampled = projection.rows
    position = np.searchsorted(sampled, wanted)
    position = np.minimum(position, len(sampled) - 1)
    found = sampled[position] == wanted
    out[found] = projection.coords[position[found]]
    missing = np.flatnonzero(~found)
    if len(missing):
        metric = projection.options.metric
        base = _prepare(matrix.vectors[sampled], metric)
        queries = _prepare(matrix.vectors[wanted[missing]], metric)
        # squared Euclidean distance on prepared rows (unit length for cosine), |q|^2 dropped
        scores = -2.0 * (queries @ base.T) + np.einsum("ij,ij->i", base, base)[None, :]
        near = np.argsort(scores, axis=1, kind="stable")[:, : min(k, len(sampled))]
        out[missing] = projection.coords[near].mean(axis=1)
    return out


def map_points(
    matrix: EmbeddingMatrix, projection: Projection, rows: npt.ArrayLike = ()
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], int]:
    """(coords, matrix row of each point, how many were placed) for drawing a map with ``rows``.

    The map's own points come first; each of ``rows`` the sample left out is appended at the
    point :func:`place_rows` gives it, so a highlighted token is always on the map.
    """
    wanted = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
    extra = wanted[~np.isin(wanted, projection.rows)]
    if len(extra) == 0:
        return projection.coords, projection.rows, 0
    placed = place_rows(matrix, projection, extra)
    return (
        np.concatenate([projection.coords, placed]),
        np.concatenate([projection.rows, extra]),
        len(extra),
    )


def _select_rows(matrix: EmbeddingMatrix, options: ProjectionOptions) -> npt.NDArray[np.int64]:
    """The rows the map shows, in order: every row, or its Chinese rows, sampled down to
    ``max_rows``."""
    if options.chinese_only:
        rows = np.flatnonzero(chinese_rows(matrix.vocab)).astype(np.int64)
        if len(rows) == 0:
            raise BadConfig(
                "The matrix has no Chinese rows to map; untick 'Chinese rows only' to map all "
                f"{matrix.shape[0]:,} rows."
            )
    else:
        rows = np.arange(matrix.shape[0], dtype=np.int64)
    if options.max_rows is None or options.max_rows >= len(rows):
        return rows
    # The sample is seeded even when the layout is not, so a map keeps its points.
    rng = np.random.default_rng(options.seed if options.seed is not None else 0)
    return np.sort(rng.choice(rows, size=options.max_rows, replace=False)).astype(np.int64)


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
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """Coords for ``vectors`` (already checked finite) and a record of what was done.

    Longer than most functions here on purpose: it reads as the map's stages in order
    (distinct rows, PCA, kNN graph, layout), each named, timed, and cancellable.
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
    check_cancel(cancel, "The map")

    x = _prepare(distinct, options.metric)
    stage_seconds: dict[str, float] = {}
    details["stage_seconds"] = stage_seconds
    clock = time.perf_counter()
    reduce_to = options.dims if not use_umap else options.pca_first
    reduced = reduce_to is not None and (not use_umap or x.shape[1] > reduce_to)
    if reduced:
        stage(progress, f"PCA to {reduce_to} dims", "rows")
        x = _pca_coords(x, reduce_to, details, progress, cancel)
    stage_seconds["pca"] = round(time.perf_counter() - clock, 3)
    if not use_umap:
        return x[inverse], details

    n_neighbors = options.n_neighbors
    if n_neighbors >= n:
        n_neighbors = n - 1
        log.info(
            "n_neighbors %d is too large for %d distinct rows; using %d.",
            options.n_neighbors, n, n_neighbors,
        )  # fmt: skip
    details["n_neighbors_used"] = n_neighbors
    clock = time.perf_counter()
    knn = _knn(x, n_neighbors, options.seed, details, progress, cancel)
    stage_seconds["knn"] = round(time.perf_counter() - clock, 3)
    check_cancel(cancel, "The map")

    # PCA initialisation (module docstring): x's first columns when x was reduced by PCA
    # (they come largest variance first), else a PCA of x to the map's dims.
    if reduced and x.shape[1] >= options.dims:
        init = x[:, : options.dims]
    else:
        stage(progress, f"PCA to {options.dims} dims (the layout's start)", "rows")
        init = _pca_coords(x, options.dims, {}, progress, cancel)
    coords = _umap_layout(x, init, knn, n_neighbors, options, details, progress, cancel)
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


def _pca_coords(
    x: np.ndarray,
    dims: int,
    details: dict[str, Any],
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> npt.NDArray[np.float32]:
    """``x`` centred on its top ``dims`` principal axes, zero-padded when it has fewer.

    The Gram matrix is summed and the rows projected in blocks, cancel checked between
    blocks; each axis's sign makes its largest entry positive, as ``postprocess.pca`` does.
    torch does the products, not numpy: the kNN graph runs in torch's thread pool, and numpy's
    OpenBLAS threads next to it made a 20,000 x 384 PCA take 2.7 s instead of 0.3 s.
    """
    import torch

    n, d = x.shape
    report = progress or (lambda done, total: None)
    keep = min(dims, n, d)
    out = np.zeros((n, dims), dtype=np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    mean = xt.mean(dim=0, dtype=torch.float64)
    gram = torch.zeros((d, d), dtype=torch.float64)
    report(0, 2 * n)
    for start in range(0, n, _BLOCK_ROWS):
        check_cancel(cancel, "The map")
        block = xt[start : start + _BLOCK_ROWS].double() - mean
        gram += block.T @ block
        report(min(n, start + _BLOCK_ROWS), 2 * n)
    variances, axes = np.linalg.eigh(gram.numpy())
    order = np.argsort(variances)[::-1]
    variances = np.clip(variances[order], 0.0, None)
    axes = axes[:, order[:keep]]
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(keep)])
    signs[signs == 0] = 1.0
    axes_t = torch.from_numpy((axes * signs).astype(np.float32))
    mean32 = mean.float()
    if n > 1:
        for start in range(0, n, _BLOCK_ROWS):
            check_cancel(cancel, "The map")
            block32 = xt[start : start + _BLOCK_ROWS] - mean32
            out[start : start + _BLOCK_ROWS, :keep] = (block32 @ axes_t).numpy()
            report(n + min(n, start + _BLOCK_ROWS), 2 * n)
    total = float(variances.sum())
    share = float(variances[:keep].sum() / total) if total > 0 else 1.0
    details[f"pca_{dims}_variance_kept"] = round(share, 4)
    log.info("PCA %d -> %d dims kept %.1f%% of the variance.", d, dims, 100 * share)
    return out


def _knn(
    x: np.ndarray,
    k: int,
    seed: int | None,
    details: dict[str, Any],
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], Any]:
    """(indices, distances, None) of each row's ``k`` nearest rows, self first."""
    started = time.perf_counter()
    n = x.shape[0]
    if n <= _EXACT_KNN_MAX_ROWS:
        stage(progress, f"neighbour graph (exact, {n:,} rows)", "rows")
        indices, distances = _exact_knn(x, k, progress, cancel)
        details["knn"] = "exact"
    else:
        stage(progress, f"neighbour graph (approximate, {n:,} rows, pynndescent)")
        indices, distances = _approximate_knn(x, k, seed, cancel)
        details["knn"] = "pynndescent"
    log.info("%s %d-NN graph of %d rows in %.1f s.", details["knn"], k, n,
             time.perf_counter() - started)  # fmt: skip
    return indices, distances, None


def _exact_knn(
    x: np.ndarray,
    k: int,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Brute-force Euclidean ``k``-NN (self included, first), in row blocks.

    torch's matmul and ``topk`` use every core and release the GIL; ``topk`` is several times
    faster than ``np.argpartition`` over the same scores (module docstring).
    """
    import torch

    report = progress or (lambda done, total: None)
    n = x.shape[0]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (xt * xt).sum(dim=1)
    indices = np.empty((n, k), dtype=np.int32)
    distances = np.empty((n, k), dtype=np.float32)
    block = max(1, min(_BLOCK_ROWS, (1 << 24) // max(n, 1)))  # ~64 MB of scores per block
    report(0, n)
    for start in range(0, n, block):
        check_cancel(cancel, "The map")
        stop = min(n, start + block)
        # |a-b|^2 - |a|^2: the row's own |a|^2 does not change its neighbour order.
        scores = xt[start:stop] @ xt.T
        scores.mul_(-2.0).add_(sq[None, :])
        local = torch.arange(stop - start)
        scores[local, start + local] = -torch.inf  # self first, even against exact duplicates
        part_scores, nearest = torch.topk(scores, k, dim=1, largest=False, sorted=True)
        d2 = part_scores + sq[start:stop, None]
        d2[:, 0] = 0.0
        indices[start:stop] = nearest.numpy()
        distances[start:stop] = torch.sqrt(torch.clamp(d2, min=0.0)).numpy()
        report(stop, n)
    return indices, distances


def _approximate_knn(
    x: np.ndarray, k: int, seed: int | None, cancel: threading.Event | None
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """pynndescent's k-NN graph, built in a child process that ``cancel`` terminates.

    pynndescent's search is one numba call with no hook (and compiles for ~30 s the first time),
    so a thread could not stop it; a process can be.
    """
    context = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded server
    # Under $EMBEDGEN_HOME/tmp with our temporary prefix: what a killed server leaves there
    # is removed at the next start (atomic.remove_leftovers), which /tmp's would not be.
    with atomic.temp_folder(tmp_dir(), "knn") as folder:
        source, target = folder / "x.npy", folder / "knn.npz"
        np.save(source, np.ascontiguousarray(x, dtype=np.float32))
        child = context.Process(
            target=_approximate_knn_child,
            args=(str(source), str(target), k, seed),
            name="embedgen-knn",
            daemon=True,
        )
        child.start()
        try:
            while child.is_alive():
                if cancel is not None and cancel.is_set():
                    child.terminate()
                    child.join(5)
                    raise Cancelled("The map was cancelled.")
                child.join(0.2)
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        if child.exitcode != 0 or not target.exists():
            raise RuntimeError(f"the kNN child process failed (exit code {child.exitcode})")
        with np.load(target) as result:
            return result["indices"].astype(np.int32), result["distances"].astype(np.float32)


def _approximate_knn_child(source: str, target: str, k: int, seed: int | None) -> None:
    """In the child process: read rows, build pynndescent's graph, write it."""
    from sklearn.utils import check_random_state
    from umap.umap_ import nearest_neighbors

    x = np.load(source)
    indices, distances, _ = nearest_neighbors(
        x,
        k,
        "euclidean",
        {},
        False,
        check_random_state(seed),
        low_memory=True,
        n_jobs=1 if seed is not None else -1,
    )
    np.savez(target, indices=indices, distances=distances)


class _EpochHook:
    """A file for umap-learn's tqdm bar: reads 'done/total' epochs, reports them, checks cancel.

    umap-learn offers no epoch callback; its ``tqdm_kwds`` are the cheap, public way in. Raising
    here stops the layout between two epochs. tqdm writes while holding its process-wide lock
    and its ``refresh`` releases it only when the write returns, so the hook releases it before
    raising: otherwise every later tqdm bar in another thread (a model download, the next map)
    would wait forever.
    """

    _PATTERN = re.compile(r"(\d+)/(\d+)")

    def __init__(self, report: ProgressFn, cancel: threading.Event | None) -> None:
        self.report = report
        self.cancel = cancel
        self.cancelled = False

    def write(self, text: str) -> int:
        if self.cancelled:
            return len(text)  # tqdm's close after the raise must not raise again
        if self.cancel is not None and self.cancel.is_set():
            from tqdm import tqdm

            self.cancelled = True
            tqdm.get_lock().release()  # taken by the refresh() that called this write
            raise Cancelled("The map was cancelled.")
        found = self._PATTERN.findall(text)
        if found:
            done, total = found[-1]
            self.report(int(done), int(total))
        return len(text)

    def flush(self) -> None:
        pass


_umap_lock = threading.Lock()
_umap_ready = False


def _import_umap() -> Any:
    """umap-learn, with numba's on-disk cache switched on for its kernels (module docstring).

    umap-learn compiles its graph and layout kernels on their first call in every process
    (~12 s on 2 cores) because only one is declared ``cache=True``. ``enable_caching`` is
    numba's own switch for that flag; the cache lives beside umap-learn's files (or in numba's
    user cache folder when those are read-only) and numba drops it when umap-learn changes.
    """
    global _umap_ready
    with _umap_lock:
        import numba
        import umap
        from umap import layouts, umap_

        if not _umap_ready:
            for module in (umap_, layouts):
                for value in vars(module).values():
                    if isinstance(value, numba.core.registry.CPUDispatcher) and (
                        value.py_func.__module__ == module.__name__
                    ):
                        try:
                            value.enable_caching()
                        except Exception as exc:  # noqa: BLE001 - only costs the compile
                            log.debug("No numba cache for %s (%s).", value.__name__, exc)
            _umap_ready = True
        return umap


def _umap_layout(
    x: np.ndarray,
    init: np.ndarray,
    knn: tuple[np.ndarray, np.ndarray, Any],
    n_neighbors: int,
    options: ProjectionOptions,
    details: dict[str, Any],
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> npt.NDArray[np.float32]:
    # Long: umap-learn's settings, one per line with why, are a third of it; the rest is the
    # layout's one try/finally around fit_transform and its timings.
    import numba

    clock = time.perf_counter()
    stage(progress, "loading umap-learn")
    umap = _import_umap()
    load_seconds = time.perf_counter() - clock
    check_cancel(cancel, "The map")

    n_epochs = 500 if x.shape[0] <= 10_000 else 200  # umap-learn's own defaults
    start = _spread(np.array(init[:, : options.dims], dtype=np.float32), options.seed)
    stage(progress, "UMAP layout", "epochs")
    report = progress or (lambda done, total: None)
    report(0, n_epochs)
    hook = _EpochHook(report, cancel)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        n_components=options.dims,
        min_dist=float(options.min_dist),
        metric="euclidean",  # on the unit-length (cosine) rows, see _prepare
        n_epochs=n_epochs,
        init=start,
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
    details.update(
        n_epochs=n_epochs,
        init="pca",
        threads=1 if options.seed is not None else os.cpu_count(),
    )
    threads = numba.get_num_threads()
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Expected with a precomputed exact graph: no search index, so no transform().
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
            coords = reducer.fit_transform(x)
    finally:
        numba.set_num_threads(threads)  # umap-learn resets it only when fit returns
    layout_seconds = time.perf_counter() - started
    report(n_epochs, n_epochs)
    log.info("UMAP layout (%d epochs) in %.1f s.", n_epochs, layout_seconds)
    details["stage_seconds"].update(
        load_umap=round(load_seconds, 3), layout=round(layout_seconds, 3)
    )
    return _centre_lost(np.asarray(coords, dtype=np.float32))


def _spread(start: np.ndarray, seed: int | None) -> np.ndarray:
    """``start`` with a tiny random spread in any column where every row is equal (e.g. a 3D
    map of 2-column rows: umap-learn would divide by 0)."""
    flat = np.ptp(start, axis=0) == 0
    if flat.any():
        rng = np.random.default_rng(seed if seed is not None else 0)
        start[:, flat] = 1e-4 * rng.standard_normal((len(start), int(flat.sum())))
    return start


def _centre_lost(coords: np.ndarray) -> np.ndarray:
    """umap-learn leaves rows with no neighbour edge at NaN: put them at the map's centre."""
    if not np.isfinite(coords).all():
        lost = ~np.isfinite(coords).all(axis=1)
        log.warning("%d rows lost every neighbour edge; placed at the centre.", int(lost.sum()))
        coords[lost] = np.nanmean(coords[~lost], axis=0) if (~lost).any() else 0.0
    return coords


__all__ = [
    "DEFAULT_MAX_ROWS",
    "MapCache",
    "Projection",
    "ProjectionOptions",
    "Reducer",
    "cache_path",
    "default_cache_dir",
    "estimate_seconds",
    "fingerprint",
    "map_budget_bytes",
    "map_points",
    "place_rows",
    "project",
    "warm_up",
]
