"""The Explore page's first map: cold and warm seconds, what cancel costs, what the choices keep.

    python bench/bench_map.py                          # structured 21,000 x 768 and x 384
    python bench/bench_map.py --matrix /tmp/m384 --tradeoff --cancel --placement --out map.md

Every case maps with the page's defaults (``ProjectionOptions()``: UMAP 2D, cosine, PCA to 50
dims, exact 15-NN, seed 0, at most 20,000 rows).

- **cold**: ``project()`` in a fresh process whose UMAP kernels are not yet loaded (torch and
  embedgen already imported, as in the app): it pays for importing umap-learn and for loading
  numba's on-disk cache of umap-learn's kernels. ``--first-ever`` adds one run with an empty
  ``NUMBA_CACHE_DIR``, so the kernels compile as on a fresh install.
- **warm**: the same call again in that process (new cache folder, so recomputed).
- medians over ``--runs`` fresh processes; the 1-minute load average before each is printed,
  because the machine these numbers come from is shared.
- ``--tradeoff``: on the same kNN graph of the first matrix, umap-learn's layout with spectral,
  PCA and random initialisation and 200 or 100 epochs: seconds, the share of each row's 15
  nearest neighbours (cosine, full width) kept among its 15 nearest on the map, and
  trustworthiness (sklearn, k=15), both on 2,000 sampled rows.
- ``--cancel``: for each stage, cancel 0.3 s after it starts; seconds until ``Cancelled``.
- ``--placement``: map every row, then place 1,000 of them from the other rows only
  (``place_rows``): the distance to where the full map put them, over the median distance
  between two map points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

KEPT_K = 15
SAMPLE = 2_000


def structured(rows: int, dims: int) -> np.ndarray:
    """bench_projection.py's seeded stand-in for word vectors (100 sparse topics, a mean, noise)."""
    from bench_projection import make_matrix

    return make_matrix("structured", rows, dims)


def real(folder: str, rows: int) -> np.ndarray:
    """``rows`` seeded random rows of a saved matrix."""
    from embedgen.matrix import load_matrix

    vectors = load_matrix(folder).vectors
    pick = np.sort(np.random.default_rng(1).choice(len(vectors), rows, replace=False))
    return np.ascontiguousarray(vectors[pick])


def kept_and_trust(x: np.ndarray, coords: np.ndarray) -> tuple[float, float]:
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(1)
    sample = rng.choice(len(x), size=min(SAMPLE, len(x)), replace=False)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit[sample] @ unit.T
    sims[np.arange(len(sample)), sample] = -np.inf
    original = np.argpartition(-sims, KEPT_K, axis=1)[:, :KEPT_K]
    c = coords.astype(np.float64)
    d2 = (c * c).sum(1)[None, :] - 2.0 * c[sample] @ c.T
    d2[np.arange(len(sample)), sample] = np.inf
    mapped = np.argpartition(d2, KEPT_K, axis=1)[:, :KEPT_K]
    kept = np.mean([len(set(a) & set(b)) / KEPT_K for a, b in zip(original, mapped, strict=True)])
    trust = trustworthiness(unit[sample], coords[sample], n_neighbors=KEPT_K, metric="euclidean")
    return float(kept), float(trust)


# ---- in a worker process -------------------------------------------------------------------


def worker(task: str, path: str) -> dict:
    import torch  # noqa: F401 - the app has it loaded before any map

    from embedgen.matrix import EmbeddingMatrix
    from embedgen.projection import ProjectionOptions, project

    x = np.load(path)
    matrix = EmbeddingMatrix(x, tuple(f"r{i}" for i in range(len(x))))
    tmp = Path(tempfile.mkdtemp(prefix="bench-map-"))
    if task == "time":
        cold = project(matrix, cache_dir=tmp / "cold")
        warm = project(matrix, cache_dir=tmp / "warm")
        return {
            "cold_s": cold.seconds,
            "warm_s": warm.seconds,
            "cold_stages": cold.details["stage_seconds"],
            "warm_stages": warm.details["stage_seconds"],
            "rows": len(cold.rows),
        }
    if task == "tradeoff":
        return tradeoff(x)
    if task == "cancel":
        project(matrix, cache_dir=tmp / "compile")  # cancel latency, not compile, is measured
        return cancel_latency(matrix, tmp)
    if task == "placement":
        from embedgen.projection import Projection, place_rows

        full = project(matrix, ProjectionOptions(max_rows=None), cache_dir=tmp / "full")
        held = np.sort(np.random.default_rng(2).choice(len(x), 1_000, replace=False))
        rest = np.setdiff1d(np.arange(len(x)), held)
        partial = Projection(full.coords[rest], full.options, 0.0, False, rest)
        placed = place_rows(matrix, partial, held)
        error = np.linalg.norm(placed - full.coords[held], axis=1)
        rng = np.random.default_rng(3)
        a, b = rng.choice(len(x), (2, 20_000))
        typical = float(np.median(np.linalg.norm(full.coords[a] - full.coords[b], axis=1)))
        # the same with a random sampled row instead of the nearest ones, as the floor
        chance = np.linalg.norm(full.coords[rng.choice(rest, 1_000)] - full.coords[held], axis=1)
        return {
            "median_error": float(np.median(error)) / typical,
            "p90_error": float(np.quantile(error, 0.9)) / typical,
            "chance_median": float(np.median(chance)) / typical,
        }
    raise SystemExit(f"unknown task {task}")


def tradeoff(x: np.ndarray) -> dict:
    import warnings

    from embedgen import projection as P

    n = min(len(x), P.DEFAULT_MAX_ROWS)
    x = x[:n]
    prepared = P._prepare(x, "cosine")
    x50 = P._pca_coords(prepared, 50, {}, None, None)
    indices, distances = P._exact_knn(x50, KEPT_K)
    umap = P._import_umap()
    rows = {}
    for name, init, epochs in [
        ("spectral", "spectral", 200),
        ("pca", x50[:, :2].copy(), 200),
        ("random", "random", 200),
        ("pca", x50[:, :2].copy(), 100),
    ]:
        reducer = umap.UMAP(
            n_neighbors=KEPT_K, n_epochs=epochs, init=init, low_memory=True, random_state=0,
            n_jobs=1, precomputed_knn=(indices, distances, None),
        )  # fmt: skip
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords = reducer.fit_transform(x50)
        seconds = time.perf_counter() - started
        kept, trust = kept_and_trust(x, coords)
        rows[f"{name}, {epochs} epochs"] = {"seconds": seconds, "kept": kept, "trust": trust}
    return rows


class CancelSink:
    """A progress sink that sets ``cancel`` 0.3 s after the stage ``target`` starts."""

    def __init__(self, target: str, cancel: threading.Event) -> None:
        self.target, self.cancel = target, cancel
        self.stages: list[str] = []
        self.set_at: float | None = None

    def set_stage(self, name: str, unit: str = "") -> None:
        self.stages.append(name)
        if name.startswith(self.target):
            threading.Timer(0.3, self.fire).start()

    def fire(self) -> None:
        self.set_at = time.perf_counter()
        self.cancel.set()

    def __call__(self, done: int, total: int) -> None:
        pass


def cancel_latency(matrix, tmp: Path) -> dict:
    from embedgen.errors import Cancelled
    from embedgen.projection import project

    out = {}
    for target in ("PCA to 50 dims", "neighbour graph", "loading umap-learn", "UMAP layout"):
        cancel = threading.Event()
        sink = CancelSink(target, cancel)
        try:
            project(matrix, cache_dir=tmp / f"cancel-{len(out)}", progress=sink, cancel=cancel)
            out[target] = {"latency_s": None, "in": "finished before the cancel"}
        except Cancelled:
            assert sink.set_at is not None
            out[target] = {"latency_s": time.perf_counter() - sink.set_at, "in": sink.stages[-1]}
        time.sleep(0.5)
    return out


# ---- the driver ----------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(
        f"{d} {metadata.version(d)}" for d in ("umap-learn", "numba", "numpy", "torch")
    )
    return f"{cores} cores of {model}, Python {platform.python_version()}, {versions}"


def spawn(task: str, path: str, *, empty_numba_cache: bool = False) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as numba_cache:
        if empty_numba_cache:
            env["NUMBA_CACHE_DIR"] = numba_cache
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--worker", task, path]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{task} on {path} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"] = load
    return result


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=21_000)
    parser.add_argument("--matrix", help="also a real matrix folder (a seeded sample of rows)")
    parser.add_argument("--no-structured", action="store_true", help="only --matrix")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per matrix")
    parser.add_argument("--first-ever", action="store_true", help="one run, empty numba cache")
    parser.add_argument("--tradeoff", action="store_true")
    parser.add_argument("--cancel", action="store_true")
    parser.add_argument("--placement", action="store_true")
    parser.add_argument("--out", help="also write the markdown here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    folder = Path(tempfile.mkdtemp(prefix="bench-map-"))
    inputs: list[tuple[str, str]] = []
    if args.matrix:
        name = f"{Path(args.matrix).name} {args.rows:,} rows"
        x = real(args.matrix, args.rows)
        np.save(folder / "real.npy", x)
        inputs.append((f"{name} x {x.shape[1]}", str(folder / "real.npy")))
    if not args.no_structured:
        for dims in (768, 384):
            np.save(folder / f"s{dims}.npy", structured(args.rows, dims))
            inputs.append((f"structured {args.rows:,} x {dims}", str(folder / f"s{dims}.npy")))

    lines = [f"Machine: {machine()}.", ""]
    lines += ["| matrix | rows mapped | cold s | warm s | cold stages (s) | load before |"]
    lines += ["| --- | ---: | ---: | ---: | --- | --- |"]
    for label, path in inputs:
        runs = [spawn("time", path) for _ in range(args.runs)]
        stages = min(runs, key=lambda r: r["cold_s"])["cold_stages"]
        loads = [r["load_before"] for r in runs]
        lines.append(
            f"| {label} | {runs[0]['rows']:,} | {median([r['cold_s'] for r in runs])} "
            f"| {median([r['warm_s'] for r in runs])} "
            f"| {', '.join(f'{k} {v:.1f}' for k, v in stages.items())} "
            f"| {', '.join(f'{load:.1f}' for load in loads)} |"
        )
        if args.first_ever:
            first = spawn("time", path, empty_numba_cache=True)
            lines.append(
                f"| {label}, first ever (empty numba cache) | {first['rows']:,} "
                f"| {first['cold_s']:.1f} | {first['warm_s']:.1f} "
                f"| {', '.join(f'{k} {v:.1f}' for k, v in first['cold_stages'].items())} "
                f"| {first['load_before']:.1f} |"
            )
        print("\n".join(lines[-1:]), file=sys.stderr)
    first_label, first_path = inputs[0]
    if args.tradeoff:
        result = spawn("tradeoff", first_path)
        lines += ["", f"Layout trade-off on {first_label} (same 15-NN graph, seed 0):", ""]
        lines += ["| init, epochs | layout s | 15-NN kept | trustworthiness |"]
        lines += ["| --- | ---: | ---: | ---: |"]
        for name, r in result.items():
            if name != "load_before":
                lines.append(
                    f"| {name} | {r['seconds']:.1f} | {r['kept']:.3f} | {r['trust']:.3f} |"
                )
    if args.cancel:
        result = spawn("cancel", first_path)
        lines += ["", f"Cancel 0.3 s into each stage, {first_label}:", ""]
        lines += [
            "| stage | cancelled in | seconds from cancel to Cancelled |",
            "| --- | --- | ---: |",
        ]
        for name, r in result.items():
            if name != "load_before":
                latency = "-" if r["latency_s"] is None else f"{r['latency_s']:.2f}"
                lines.append(f"| {name} | {r['in']} | {latency} |")
    if args.placement:
        r = spawn("placement", first_path)
        lines += [
            "",
            f"Placement of 1,000 held-out rows of {first_label} (map of all rows), in units of "
            f"the median distance between two map points: median {r['median_error']:.3f}, "
            f"90th percentile {r['p90_error']:.3f}; a random other row: {r['chance_median']:.3f}.",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
