"""Top-10 neighbour query latency on the CPU: NeighbourIndex against a plain numpy peer.

    python bench/bench_neighbours.py [--queries 200] [--out bench/results/neighbours.md]

Matrices of bert-base-chinese's and multilingual-e5-small's sizes (21,128 x 768 and
250,000 x 384), seeded random float32 rows (the cost of exact search does not depend on the
values). Each query is a row of the matrix, looked up by its token, as the Explore page asks.
The peer is what a script would write: cosines against the normalised rows, then a full
``np.argsort``. Medians and 95th percentiles over the queries, after 5 warm-up queries.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.matrix import EmbeddingMatrix  # noqa: E402
from embedgen.neighbours import NeighbourIndex  # noqa: E402

SIZES = [(21_128, 768, 5.0), (250_000, 384, 50.0)]  # rows, dims, issue 10's target in ms


def timings(fn, queries: list) -> tuple[float, float]:
    for q in queries[:5]:
        fn(q)
    out = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        out.append(1000 * (time.perf_counter() - started))
    return float(np.median(out)), float(np.percentile(out, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [
        f"{os.cpu_count()} CPU cores ({platform.machine()}), numpy {np.__version__}, "
        f"{args.queries} queries, top 10.",
        "",
        "| matrix | NeighbourIndex median / p95 | numpy argsort peer median / p95 | peer / ours "
        "| target |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for rows, dims, target in SIZES:
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((rows, dims), dtype=np.float32)
        vocab = tuple(f"t{i}" for i in range(rows))
        index = NeighbourIndex(EmbeddingMatrix(vectors, vocab))
        picks = rng.choice(rows, size=args.queries, replace=False)
        ours = timings(lambda i, ix=index, v=vocab: ix.top_k(v[i], k=10), list(picks))
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def peer(i: int, unit: np.ndarray = unit) -> list[int]:
            scores = unit @ unit[i]
            return [j for j in np.argsort(-scores)[:11] if j != i][:10]

        theirs = timings(peer, list(picks))
        lines.append(
            f"| {rows:,} x {dims} | {ours[0]:.1f} / {ours[1]:.1f} ms | {theirs[0]:.1f} / "
            f"{theirs[1]:.1f} ms | {theirs[0] / ours[0]:.1f} | < {target:g} ms |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
