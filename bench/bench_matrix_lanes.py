"""Matrices on the CPU, one batch at a time against lanes (``embedgen.lanes``), same run.

    python bench/bench_matrix_lanes.py [--model /root/.embedgen/models/e5-small] [--repeats 3]
                                       [--out bench/results/matrix_lanes.md]

Three builds of the Matrix page, each with ``EMBEDGEN_CPU_LANES=1`` (one batch at a time on
all threads, as before) and with one lane per thread (the default), round-robin, medians:
``contextual`` over the model's CJK tokens (the page's default from a model or run), whole
words (``contextual`` with the wordsim-240/297 and SimLex words as rows) and ``aggregated``
over the same words in generated sentences (the default for word rows without a corpus).
Also checks that both give the same rows (largest difference).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.evaluate import read_similarity  # noqa: E402
from embedgen.lanes import LANES_ENV  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.words import words_from_list  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/matrix_lanes.md"))
    args = parser.parse_args()
    # Every build reads its own generated contexts: none kept between the settings.
    os.environ["EMBEDGEN_FEATURE_CACHE_MB"] = "0"
    started = time.time()
    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    files = sorted((DATA / "wordsim").glob("*.txt"))
    sims = [read_similarity(f) for f in files]
    words = words_from_list([w for s in sims for p in s.pairs for w in (p.first, p.second)])
    builds = {
        "contextual, CJK tokens": (MatrixOptions(method="contextual", cjk_only=True), {}),
        f"contextual, {len(words):,} words": (MatrixOptions(method="contextual"), {"words": words}),
        f"aggregated (generated contexts), {len(words):,} words": (
            MatrixOptions(method="aggregated"),
            {"words": words},
        ),
    }
    lanes = str(torch.get_num_threads())
    seconds: dict[tuple[str, str], list[float]] = {}
    rows: dict[tuple[str, str], np.ndarray] = {}
    shapes: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, (options, given) in builds.items():
            for n in ("1", lanes):
                os.environ[LANES_ENV] = n
                start = time.perf_counter()
                matrix = build_matrix(encoder, options, **given)
                seconds.setdefault((name, n), []).append(time.perf_counter() - start)
                rows[(name, n)] = matrix.vectors
                shapes[name] = matrix.shape[0]
    os.environ.pop(LANES_ENV, None)
    lines = [
        f"{Path(args.model).name}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; median of {args.repeats} round-robin builds (range)",
        "",
        f"| matrix | rows | one batch at a time s | {lanes} lanes s | speed-up "
        "| largest difference |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in builds:
        one, many = (sorted(seconds[(name, n)]) for n in ("1", lanes))
        m1, mn = one[len(one) // 2], many[len(many) // 2]
        diff = float(np.abs(rows[(name, "1")] - rows[(name, lanes)]).max())
        lines.append(
            f"| {name} | {shapes[name]:,} | {m1:.1f} ({one[0]:.1f}–{one[-1]:.1f}) | "
            f"{mn:.1f} ({many[0]:.1f}–{many[-1]:.1f}) | {m1 / mn:.2f} | {diff:.1e} |"
        )
    lines += ["", f"{time.time() - started:.0f} s in all"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
