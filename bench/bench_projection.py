"""Time embedgen's UMAP 2D map against plain umap-learn, cold and warm, on the same machine.

    python bench/bench_projection.py               # random 5,000 x 384 and 21,128 x 768
    python bench/bench_projection.py --structured  # also a structured 5,000 x 384 matrix
    python bench/bench_projection.py --quick       # random 5,000 x 384 only

21,128 x 768 is the shape of bert-base-chinese's token-embedding matrix. Every case runs in a
fresh Python process, so its first call is truly "cold": it includes importing umap-learn and
numba's just-in-time compile. The same process then repeats the call twice ("warm": compiled
code, a fresh cache folder so the map is recomputed; the faster of the two counts) and, for
embedgen, once more with the cache in place ("cache"). "first ever" cases also point
NUMBA_CACHE_DIR at an empty folder, as on a fresh install, so numba's on-disk cache cannot help.

peer = ``umap.UMAP(n_components=2, metric="cosine").fit_transform(X)`` on the full-width
matrix (no PCA first), with umap-learn's default ``random_state=None`` (parallel), and the
same with ``random_state=0`` (reproducible, single-threaded) to compare with seed=0.

"kept" is map quality: the share of each row's 15 nearest neighbours by cosine in the original
matrix that are among its 15 nearest points in the map (2,000 sampled rows). Random Gaussian
matrices have no structure worth keeping, so there it is near 0 for every method; the
structured matrix (100 sparse topics, a shared mean direction, noise, uneven norms - a crude
stand-in for word vectors) is where it means something.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

SIZES = [(5_000, 384), (21_128, 768)]
WARM_REPEATS = 2  # warm = the faster of two calls: other work on a shared machine adds noise
KEPT_K = 15
KEPT_SAMPLE = 2_000


def make_matrix(kind: str, rows: int, dims: int) -> np.ndarray:
    """A seeded float32 matrix: i.i.d. Gaussian ("random") or sparse topics ("structured")."""
    rng = np.random.default_rng(0)
    if kind == "random":
        return rng.standard_normal((rows, dims), dtype=np.float32)
    topics = rng.standard_normal((100, dims)) * np.linspace(2.0, 0.2, 100)[:, None]
    weights = rng.standard_normal((rows, 100)) * (rng.random((rows, 100)) < 0.05)
    mean = rng.standard_normal(dims) * 3.0
    x = (mean + weights @ topics + 0.5 * rng.standard_normal((rows, dims))) * rng.uniform(
        0.5, 2.0, (rows, 1)
    )
    return x.astype(np.float32)


def neighbours_kept(x: np.ndarray, coords: np.ndarray) -> float:
    """Share of sampled rows' cosine k-NN in ``x`` that stay among their k-NN in ``coords``."""
    rng = np.random.default_rng(1)
    sample = rng.choice(len(x), size=min(KEPT_SAMPLE, len(x)), replace=False)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = coords.astype(np.float64)
    hits = 0
    for block in np.array_split(sample, max(1, len(sample) // 250)):
        rows = np.arange(len(block))
        sims = unit[block] @ unit.T
        sims[rows, block] = -np.inf
        original = np.argpartition(-sims, KEPT_K, axis=1)[:, :KEPT_K]
        d2 = (c * c).sum(1)[None, :] - 2.0 * c[block] @ c.T
        d2[rows, block] = np.inf
        mapped = np.argpartition(d2, KEPT_K, axis=1)[:, :KEPT_K]
        hits += sum(len(set(a) & set(b)) for a, b in zip(original, mapped, strict=True))
    return hits / (len(sample) * KEPT_K)


# ---- one case, in its own process ----------------------------------------------------------


def run_worker(who: str, kind: str, rows: int, dims: int, seed: int | None) -> dict:
    x = make_matrix(kind, rows, dims)
    out: dict = {}
    if who == "peer":
        started = time.perf_counter()
        import umap

        out["import_s"] = time.perf_counter() - started

        def once() -> np.ndarray:
            return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(x)

        once()
        out["cold_s"] = time.perf_counter() - started
        warm = []
        for _ in range(WARM_REPEATS):
            started = time.perf_counter()
            coords = once()
            warm.append(time.perf_counter() - started)
        out["warm_s"] = min(warm)
        out["warm_all_s"] = warm
        out["kept"] = neighbours_kept(x, coords)
        return out

    from embedgen.matrix import EmbeddingMatrix
    from embedgen.projection import ProjectionOptions, project

    matrix = EmbeddingMatrix(x, tuple(str(i) for i in range(rows)))
    options = ProjectionOptions(seed=seed, max_rows=None)  # every row, as before the cap
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()  # umap-learn is imported inside the first project()
        cold = project(matrix, options, cache_dir=Path(tmp, "a"))
        out["cold_s"] = time.perf_counter() - started
        warms = [
            project(matrix, options, cache_dir=Path(tmp, f"warm{i}")) for i in range(WARM_REPEATS)
        ]
        warm = min(warms, key=lambda p: p.seconds)
        out["warm_s"] = warm.seconds
        out["warm_all_s"] = [p.seconds for p in warms]
        cached = project(matrix, options, cache_dir=Path(tmp, "warm0"))
        assert cached.from_cache and not warm.from_cache and not cold.from_cache
        out["cache_s"] = cached.seconds
        out["cold_stages"] = cold.details["stage_seconds"]
        out["warm_stages"] = warm.details["stage_seconds"]
        out["knn"] = warm.details["knn"]
        out["kept"] = neighbours_kept(x, warm.coords)
    return out


# ---- the driver ----------------------------------------------------------------------------


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("umap-learn", "pynndescent", "numba", "numpy", "scikit-learn", "embedgen"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def spawn(
    who: str, kind: str, rows: int, dims: int, seed: int | None, *, empty_numba_cache: bool
) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as numba_cache:
        if empty_numba_cache:
            env["NUMBA_CACHE_DIR"] = numba_cache
        cmd = [sys.executable, __file__, "--worker", who, "--kind", kind, "--rows", str(rows)]
        cmd += ["--dims", str(dims), "--seed", "none" if seed is None else str(seed)]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{who} {kind} {rows}x{dims} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = wall  # includes interpreter start-up and making the matrix
    result["load_before"] = load  # 1-minute load average: anything above ~0 is other work
    return result


CASES = [  # (label, who, seed, empty numba cache, peer it is compared with)
    ("embedgen seed=0", "ours", 0, False, "peer random_state=0"),
    ("embedgen seed=None", "ours", None, False, "peer random_state=None"),
    ("peer random_state=None", "peer", None, False, None),
    ("peer random_state=0", "peer", 0, False, None),
]
FIRST_EVER = [
    ("embedgen seed=0, first ever", "ours", 0, True, "peer random_state=0, first ever"),
    ("peer random_state=0, first ever", "peer", 0, True, None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="random 5,000 x 384 only")
    parser.add_argument("--structured", action="store_true", help="add a structured matrix")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="random", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dims", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        seed = None if args.seed == "none" else int(args.seed)
        print(json.dumps(run_worker(args.worker, args.kind, args.rows, args.dims, seed)))
        return

    info = machine()
    print("# machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    plan = []  # (kind, rows, dims, cases)
    for i, (rows, dims) in enumerate(SIZES[:1] if args.quick else SIZES):
        plan.append(("random", rows, dims, CASES + (FIRST_EVER if i == 0 else [])))
    if args.structured:
        plan.append(("structured", *SIZES[0], CASES))

    results = []
    for kind, rows, dims, cases in plan:
        for label, who, seed, empty, peer in cases:
            r = spawn(who, kind, rows, dims, seed, empty_numba_cache=empty)
            r.update(label=label, kind=kind, rows=rows, dims=dims, peer=peer)
            results.append(r)
            cache = f"{r['cache_s'] * 1000:8.1f} ms" if "cache_s" in r else "         -"
            stages = f"  warm stages {r['warm_stages']}" if "warm_stages" in r else ""
            print(
                f"{kind:10s} {rows:>6} x {dims:<4} {label:32s} cold {r['cold_s']:6.1f} s  "
                f"warm {r['warm_s']:6.1f} s  cache {cache}  kept {r['kept']:.3f}  "
                f"load {r['load_before']:.1f}{stages}",
                flush=True,
            )

    print(
        "\n| matrix | case | cold s | warm s | from cache | kept | peer/ours cold "
        "| peer/ours warm |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        ratios = ("", "")
        if r["peer"]:
            p = next(
                q
                for q in results
                if q["label"] == r["peer"] and (q["kind"], q["rows"]) == (r["kind"], r["rows"])
            )
            ratios = (f"{p['cold_s'] / r['cold_s']:.1f}x", f"{p['warm_s'] / r['warm_s']:.1f}x")
        cache = f"{r['cache_s'] * 1000:.0f} ms" if "cache_s" in r else "-"
        print(
            f"| {r['kind']} {r['rows']:,} x {r['dims']} | {r['label']} | {r['cold_s']:.1f} | "
            f"{r['warm_s']:.1f} | {cache} | {r['kept']:.2f} | {ratios[0]} | {ratios[1]} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
