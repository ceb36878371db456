"""CPU encoding: what int8, the max length and lanes do to the ``head`` strategy's
first run (speed and validation macro-F1) and to a contextual matrix (speed, neighbours,
word similarity), each against fp32 in the same run.

    python bench/bench_cpu_encode.py [--model /root/.embedgen/models/e5-small] [--rows 3000]
                                     [--out bench/results/cpu_encode.md]

Head runs: a seeded, stratified sample of ``--rows`` waimai_10k reviews, feature cache off, 10
epochs, each setting run ``--repeats`` times round-robin (medians); "today" is fp32 at max
length 128 (the default before this benchmark) with torch's thread count, one batch at a time
(``EMBEDGEN_CPU_LANES=1``); "lanes" reads one batch per core side by side, one thread each
(``embedgen.lanes``, the default now). Encoding rows/s is
timed from the "encoding" stage to the first epoch. Matrix: multilingual-e5-small's 17,134 CJK
tokens, ``contextual`` (last layer), fp32 against int8: build time, the share of each row's 10
nearest neighbours both agree on (2,000 sampled rows), and wordsim-240/297 Spearman of whole-
word vectors of the benchmarks' words.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.data import LabelledData, prepare  # noqa: E402
from embedgen.evaluate import read_similarity, similarity  # noqa: E402
from embedgen.lanes import LANES_ENV  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.quantize import int8_encoder  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.tokens import text_lengths  # noqa: E402
from embedgen.train import FinetuneConfig, finetune  # noqa: E402
from embedgen.words import words_from_list  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Stages:
    """A progress sink that notes when each stage starts."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def set_stage(self, name: str, unit: str) -> None:
        self.started.setdefault(name.split(" ")[0], time.perf_counter())

    def __call__(self, done: int, total: int) -> None:
        pass


def sample(data: LabelledData, rows: int, seed: int = 0) -> LabelledData:
    """``rows`` rows of ``data``, each class in proportion, in file order."""
    rng = np.random.default_rng(seed)
    labels = np.array(data.labels)
    keep: list[int] = []
    for c in np.unique(labels):
        at = np.flatnonzero(labels == c)
        keep += rng.choice(at, round(rows * len(at) / len(labels)), replace=False).tolist()
    keep.sort()
    return replace(
        data,
        texts=tuple(data.texts[i] for i in keep),
        labels=tuple(data.labels[i] for i in keep),
        rows=tuple(data.rows[i] for i in keep),
    )


def head_run(
    encoder, data, *, int8: bool, max_length: int | None, threads: int, lanes: int
) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    os.environ[LANES_ENV] = str(lanes)
    stages = Stages()
    config = FinetuneConfig(
        int8=int8, max_length=max_length, cache_features=False, device="cpu", seed=0
    )
    try:
        start = time.perf_counter()
        run = finetune(encoder, data, config, progress=stages)
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
        os.environ.pop(LANES_ENV, None)
    encode = stages.started["epoch"] - stages.started["encoding"]
    return {
        "int8": int8,
        "max_length": run.config.max_length,
        "threads": threads,
        "lanes": lanes,
        "encode_s": encode,
        "rows_per_s": len(data) / encode,
        "total_s": total,
        "f1": run.history[run.best_epoch - 1].val_macro_f1,
    }


def overlap(a: np.ndarray, b: np.ndarray, rows: int = 2000, k: int = 10) -> float:
    """Mean share of the k nearest neighbours (cosine) two matrices agree on, over rows."""
    rng = np.random.default_rng(0)
    at = rng.choice(len(a), min(rows, len(a)), replace=False)

    def top(m: np.ndarray) -> np.ndarray:
        unit = m / np.linalg.norm(m, axis=1, keepdims=True)
        scores = unit[at] @ unit.T
        scores[np.arange(len(at)), at] = -np.inf
        return np.argpartition(-scores, k, axis=1)[:, :k]

    ta, tb = top(a), top(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (median)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_encode.md"))
    args = parser.parse_args()
    os.environ["EMBEDGEN_HOME"] = tempfile.mkdtemp(prefix="embedgen-bench-")
    started = time.time()
    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    full = prepare(read_table(DATA / "classification" / "waimai_10k.csv"), "review", "label")
    data = sample(full, args.rows)
    lengths = text_lengths(encoder.tokenizer, data.texts)
    cores = torch.get_num_threads()
    plans = [  # int8, max length (None: from the data), threads, lanes
        (False, 128, cores, 1),  # today: the defaults before this benchmark
        (False, None, cores, 1),
        (False, None, cores, cores),  # fp32 as it reads now
        (True, None, cores, 1),
        (True, None, cores, cores),  # int8 as it reads now
    ]
    # Round-robin repeats, medians: a shared machine's speed drifts between runs.
    runs: list[list[dict]] = [[] for _ in plans]
    for _ in range(args.repeats):
        for i, (q, m, t, n) in enumerate(plans):
            runs[i].append(head_run(encoder, data, int8=q, max_length=m, threads=t, lanes=n))
    records = []
    for done in runs:
        median = sorted(done, key=lambda r: r["rows_per_s"])[len(done) // 2]
        records.append(
            {
                **median,
                "spread": (min(r["rows_per_s"] for r in done), max(r["rows_per_s"] for r in done)),
            }
        )
    base = records[0]
    lines = [
        f"head, {len(data):,} waimai_10k rows (texts: {lengths.describe()}); "
        f"{platform.machine()}, {cores} threads by default, torch {torch.__version__}",
        "",
        f"median of {args.repeats} round-robin runs (range in brackets)",
        "",
        "| reader | max length | threads | lanes | encoding rows/s | × today | whole run s | "
        "val macro-F1 |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        lines.append(
            f"| {'int8' if r['int8'] else 'fp32'} | {r['max_length']} | {r['threads']} | "
            f"{r['lanes']} | "
            f"{r['rows_per_s']:.0f} ({r['spread'][0]:.0f}–{r['spread'][1]:.0f}) | "
            f"{r['rows_per_s'] / base['rows_per_s']:.2f} | "
            f"{r['total_s']:.1f} | {r['f1']:.3f} |"
        )

    options = MatrixOptions(method="contextual", cjk_only=True)
    int8 = int8_encoder(encoder)
    timed = {}
    for name, enc in (("fp32", encoder), ("int8", int8)):
        start = time.perf_counter()
        timed[name] = (build_matrix(enc, options), time.perf_counter() - start)
    sims = [read_similarity(DATA / "wordsim" / f"wordsim-{n}.txt") for n in (240, 297)]
    words = words_from_list([w for s in sims for p in s.pairs for w in (p.first, p.second)])
    scores = {}
    for name, enc in (("fp32", encoder), ("int8", int8)):
        matrix = build_matrix(enc, MatrixOptions(method="contextual"), words=words)
        scores[name] = [100 * (similarity(matrix, s).spearman or 0) for s in sims]
    (fp32, fp32_s), (q, q_s) = timed["fp32"], timed["int8"]
    lines += [
        "",
        f"contextual matrix, {fp32.shape[0]:,} CJK tokens: fp32 {fp32_s:.1f} s, int8 {q_s:.1f} s "
        f"({fp32_s / q_s:.2f}×); top-10 neighbours shared: "
        f"{overlap(fp32.vectors, q.vectors):.3f}; whole-word wordsim-240 / 297: fp32 "
        f"{scores['fp32'][0]:.1f} / {scores['fp32'][1]:.1f}, int8 "
        f"{scores['int8'][0]:.1f} / {scores['int8'][1]:.1f}",
        "",
        f"{time.time() - started:.0f} s in all",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
