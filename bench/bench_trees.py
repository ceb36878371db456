"""The same work timed on two checkouts of embedgen, alternating: does a change keep the speed?

    git worktree add /tmp/before 8ac0082          # the peer: the code before the change
    python bench/bench_trees.py --tree /tmp/before --tree . \\
        --model /path/to/e5-small [--rows 4000] [--repeats 3] [--out bench/results/trees.md]

Each repeat runs, for each tree in turn, one child process with that tree first on
``PYTHONPATH`` and an empty ``$EMBEDGEN_HOME``, on the first ``--rows`` reviews of waimai_10k:

1. ``runs.train_and_save``: strategy head, d=128, 3 epochs, no early stop (the texts encoded,
   word states kept as the CLI and the app keep them);
2. ``build_matrix`` from that run: aggregated, default options, the reviews as the corpus (so it
   takes the run's word states);
3. ``build_matrix`` from the model: contextual, CJK tokens only (the Matrix page's default).

It prints each step's median seconds per tree, their ratio, and how far the trees' matrices
differ (they should not: the change under test moves code, not numbers). Only the public
functions both trees have are called.
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
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "classification"

WORK = r"""
import dataclasses, json, sys, time
from pathlib import Path
import numpy as np
import embedgen
from embedgen.data import prepare
from embedgen.matrix import MatrixOptions, build_matrix
from embedgen.models import load_encoder
from embedgen.runs import train_and_save
from embedgen.table import read_table
from embedgen.train import FinetuneConfig
from embedgen.words import Corpus

model, data_file, rows, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
encoder = load_encoder(model, allow_download=False, device="cpu")
data = prepare(read_table(data_file), "review", "label")
data = dataclasses.replace(
    data, texts=data.texts[:rows], labels=data.labels[:rows], rows=data.rows[:rows]
)
seconds = {"code": str(Path(embedgen.__file__).parent)}
t0 = time.perf_counter()
run = train_and_save(encoder, data, FinetuneConfig(dim=128, epochs=3, patience=0, device="cpu"),
                     out / "run")
seconds["head run"] = time.perf_counter() - t0
corpus = Corpus.of(data.texts, "waimai")
t0 = time.perf_counter()
aggregated = build_matrix(run, MatrixOptions(method="aggregated", device="cpu"), corpus=corpus)
seconds["aggregated from the run"] = time.perf_counter() - t0
t0 = time.perf_counter()
tokens = build_matrix(encoder, MatrixOptions(method="contextual", cjk_only=True, device="cpu"))
seconds["contextual CJK tokens"] = time.perf_counter() - t0
np.save(out / "aggregated.npy", aggregated.vectors)
np.save(out / "tokens.npy", tokens.vectors)
print(json.dumps(seconds))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=DATA / "waimai_10k.csv")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/trees.md"))
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree]
    times: dict[Path, dict[str, list[float]]] = {t: {} for t in trees}
    outputs: dict[Path, Path] = {}
    for r in range(args.repeats):
        for tree in trees:
            out = Path(tempfile.mkdtemp(prefix="embedgen-trees-"))
            env = {**os.environ, "PYTHONPATH": str(tree), "EMBEDGEN_HOME": str(out / "home")}
            done = subprocess.run(
                [sys.executable, "-c", WORK, args.model, str(args.data), str(args.rows), str(out)],
                env=env,
                cwd=out,  # not a checkout: python -c puts the working folder first on sys.path
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            assert Path(result.pop("code")).parent == tree, f"{tree} was not the code run"
            for step, s in result.items():
                times[tree].setdefault(step, []).append(s)
            outputs[tree] = out
            print(f"repeat {r + 1}, {tree}: {result}", flush=True)
    before, after = trees[0], trees[-1]
    diffs = {
        name: float(np.abs(np.load(outputs[before] / name) - np.load(outputs[after] / name)).max())
        for name in ("aggregated.npy", "tokens.npy")
    }
    lines = [
        f"## {before.name} against {after.name}",
        "",
        f"{Path(args.model).name} on the first {args.rows:,} reviews of {args.data.name}, CPU "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores); medians of "
        f"{args.repeats} alternating runs, each in a fresh process and $EMBEDGEN_HOME (range).",
        "",
        f"| step | {before.name} | {after.name} | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for step, peer in times[before].items():
        ours = times[after][step]
        a, b = statistics.median(peer), statistics.median(ours)
        lines.append(
            f"| {step} | {a:.1f} s ({min(peer):.1f}–{max(peer):.1f}) | "
            f"{b:.1f} s ({min(ours):.1f}–{max(ours):.1f}) | {b / a:.2f}x the time |"
        )
    lines += [
        "",
        "Largest difference between the two trees' matrices: "
        + ", ".join(f"{name[:-4]} {d:.1e}" for name, d in diffs.items())
        + ".",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, "utf-8")


if __name__ == "__main__":
    main()
