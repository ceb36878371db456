"""An aggregated matrix from a head run, taking the run's word states against reading again.

    python bench/bench_word_states.py [--model /root/.embedgen/models/e5-small]
                                      [--out bench/results/word_states.md]

With multilingual-e5-small (built by ../shared/tools/build-e5-small.sh) on waimai_10k
(11,987 reviews), each in an empty temporary ``$EMBEDGEN_HOME``:

1. the head pass's cost: ``finetune`` (strategy head, d=128, 3 epochs, no early stop) with the
   word states off, then on, alternating, ``--train-repeats`` times each (medians); each run
   encodes every review (its own empty cache);
2. the matrix: ``aggregated`` from the second run over the same reviews (the default options:
   the corpus's words, 8 corpus and 4 generated contexts per word, the last layer, through the
   projection), first taking the word states, then with the states file removed (the peer:
   reading every corpus context again), alternating, ``--repeats`` times each, the cache of
   generated contexts emptied before each build; the rows of the two are compared;
3. the analyst's loop: train again with another d (features from the cache) and build the
   same matrix, which now finds the word states and the generated contexts kept.

Prints a Markdown table with the machine and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.data import prepare  # noqa: E402
from embedgen.features import features_dir  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.train import FinetuneConfig, finetune  # noqa: E402
from embedgen.words import Corpus  # noqa: E402
from embedgen.wordstates import WordStateHook  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "classification"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    parser.add_argument("--data", type=Path, default=DATA / "waimai_10k.csv")
    parser.add_argument("--out", type=Path, default=Path("bench/results/word_states.md"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-repeats", type=int, default=3)
    args = parser.parse_args()

    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    data = prepare(read_table(args.data), "review", "label")
    corpus = Corpus.of(data.texts, args.data.name)

    trained: dict[bool, list[float]] = {False: [], True: []}
    run = None
    for _ in range(args.train_repeats):
        for states in (False, True):
            os.environ["EMBEDGEN_HOME"] = tempfile.mkdtemp(prefix="embedgen-bench-")
            cfg = FinetuneConfig(dim=128, epochs=3, patience=0, device="cpu", word_states=states)
            t0 = time.perf_counter()
            hook = WordStateHook() if states else None  # as runs.train_and_save plugs it
            run = finetune(encoder, data, cfg, states_hook=hook)
            trained[states].append(time.perf_counter() - t0)
            print(f"head run, word states {'on' if states else 'off'}: {trained[states][-1]:.1f} s")
    assert run is not None
    train_s = {k: statistics.median(v) for k, v in trained.items()}
    spread = {k: f"{min(v):.1f}–{max(v):.1f}" for k, v in trained.items()}
    files = sorted(features_dir().glob("*/words-*.npz"))
    assert len(files) == 1, f"expected one word-state file, found {files}"
    kept = files[0].read_bytes()
    size_mb = len(kept) / 2**20

    options = MatrixOptions(method="aggregated", device="cpu")
    times: dict[str, list[float]] = {"states": [], "again": []}
    matrices = {}
    for _ in range(args.repeats):
        for how in ("states", "again"):
            if how == "again":
                files[0].unlink()
            else:
                files[0].write_bytes(kept)
            for generated in features_dir().glob("*/generated.npz"):
                generated.unlink()
            t0 = time.perf_counter()
            matrices[how] = build_matrix(run, options, corpus=corpus)
            times[how].append(time.perf_counter() - t0)
            print(f"aggregated, {how}: {times[how][-1]:.1f} s", flush=True)
    files[0].write_bytes(kept)
    build_matrix(run, options, corpus=corpus)  # keeps the generated contexts
    t0 = time.perf_counter()
    again = FinetuneConfig(dim=64, epochs=3, patience=0, device="cpu")
    rerun = finetune(encoder, data, again, states_hook=WordStateHook())
    retrain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rebuilt = build_matrix(rerun, options, corpus=corpus)
    rebuild_s = time.perf_counter() - t0
    cached = rebuilt.manifest["contexts"]
    print(f"re-run d=64: {retrain_s:.1f} s, its matrix {rebuild_s:.1f} s", flush=True)
    from_run = matrices["states"].manifest["contexts"]["from_run"]
    diff = float(np.abs(matrices["states"].vectors - matrices["again"].vectors).max())
    cos = _min_cosine(matrices["states"].vectors, matrices["again"].vectors)
    ours, peer = statistics.median(times["states"]), statistics.median(times["again"])

    cpu = platform.processor() or platform.machine()
    lines = [
        "## Aggregated matrices from a head run's word states",
        "",
        f"{Path(args.model).name} on {args.data.name} ({len(data):,} rows), CPU ({cpu}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores), torch "
        f"{torch.__version__}. Head runs: d=128, 3 epochs, max length {run.config.max_length}, "
        f"medians of {args.train_repeats} alternating (range). "
        f"Matrix: aggregated, {matrices['states'].shape[0]:,} corpus words, default options; "
        f"medians of {args.repeats}, alternating.",
        "",
        "| step | word states off (peer) | on | ratio |",
        "| --- | --- | --- | --- |",
        f"| head run (encode + 3 epochs) | {train_s[False]:.1f} s ({spread[False]}) | "
        f"{train_s[True]:.1f} s ({spread[True]}) | "
        f"{train_s[True] / train_s[False]:.2f}x the time |",
        f"| aggregated matrix from the run | {peer:.1f} s | {ours:.1f} s | "
        f"{peer / ours:.2f}x faster |",
        "",
        f"The loop: a re-run with d=64 took {retrain_s:.1f} s (features from the cache) and its "
        f"matrix {rebuild_s:.1f} s ({peer / rebuild_s:.1f}x faster than reading everything "
        f"again): {cached['from_run']['contexts']:,} corpus contexts from the word states, "
        f"{cached['from_run']['read_again']:,} read again, the generated contexts of "
        f"{cached['generated_cached']:,} words from the cache.",
        "",
        f"Corpus contexts taken from the word states: {from_run['contexts']:,}; read again "
        f"(texts the run cut, words it did not keep): {from_run['read_again']:,}. Word-state "
        f"file: {size_mb:.1f} MiB. Rows against reading again: largest difference {diff:.1e}, "
        f"smallest cosine {cos:.6f}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, "utf-8")


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    na = a / np.linalg.norm(a, axis=1, keepdims=True)
    nb = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((na * nb).sum(1).min())


if __name__ == "__main__":
    main()
