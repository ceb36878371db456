"""The data's word matrix ("words of your data", aggregated): its estimate, build and time left.

    python bench/bench_data_words.py --model /root/.embedgen/models/e5-small [--join 5]
                                     [--texts 8000] [--from-run] [--out FILE]

Takes ``--texts`` texts made of ``--join`` consecutive waimai_10k reviews each (1: the reviews
themselves, about 30 characters; 5: about 125, the length of hotel reviews), in an empty
temporary ``$EMBEDGEN_HOME``, and goes the way the Matrix page goes: the words of the data
(``words_from_corpus``, default options), ``estimate_build``, then ``build_matrix`` with the
default aggregated options, from the plain model or (``--from-run``) from a ``head`` run over
the same texts (d=128, 3 epochs, word states kept, as ``runs.train_and_save`` plugs them).
Prints the estimate against the build, what the build read, and how far the time left is from
the truth at 10, 25, 50 and 75% done: as the app's job panel computes it (the rate since the
first progress report), and from the rate since the build started, set-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.data import prepare  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix, estimate_build  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.train import FinetuneConfig, finetune  # noqa: E402
from embedgen.words import Corpus, WordOptions, words_from_corpus  # noqa: E402
from embedgen.wordstates import WordStateHook  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "classification"
MARKS = (0.10, 0.25, 0.50, 0.75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    parser.add_argument("--data", type=Path, default=DATA / "waimai_10k.csv")
    parser.add_argument("--texts", type=int, default=8000)
    parser.add_argument("--join", type=int, default=1, help="reviews per text")
    parser.add_argument("--from-run", action="store_true", help="build from a head run")
    parser.add_argument("--out", type=Path, default=None, help="append the result here")
    args = parser.parse_args()
    os.environ["EMBEDGEN_HOME"] = tempfile.mkdtemp(prefix="embedgen-bench-")

    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    data = _joined(args.data, args.texts, args.join)
    corpus = Corpus.of(data.texts, "bench")
    started = time.perf_counter()
    words = words_from_corpus(corpus, WordOptions())
    segmenting = time.perf_counter() - started
    source, trained = encoder, ""
    if args.from_run:
        started = time.perf_counter()
        cfg = FinetuneConfig(dim=128, epochs=3, device="cpu")
        source = finetune(encoder, data, cfg, states_hook=WordStateHook())
        trained = (
            f"; head run {time.perf_counter() - started:.0f} s "
            f"(max length {source.config.max_length})"
        )
    options = MatrixOptions(method="aggregated", device="cpu")
    started = time.perf_counter()
    estimate = estimate_build(source, options, words=words, corpus=corpus)
    estimating = time.perf_counter() - started
    seen: list[tuple[float, float]] = []
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        seen.append((time.perf_counter() - started, done / max(total, 1)))

    matrix = build_matrix(source, options, words=words, corpus=corpus, progress=progress)
    total = time.perf_counter() - started
    # The time left as the app shows it: the rate since the stage's first report (the job
    # panel's rule), and, stricter, the rate since the build started (its set-up included).
    first_at, first_share = seen[0]
    errors, strict = [], []
    for mark in MARKS:
        at, share = next((t, f) for t, f in seen if f >= mark)
        left = (at - first_at) / max(share - first_share, 1e-9) * (1 - share)
        errors.append(f"{left / (total - at) - 1:+.0%}")
        strict.append(f"{at / share * (1 - share) / (total - at) - 1:+.0%}")
    chars = sum(map(len, data.texts)) / len(data)
    lines = [
        f"{Path(args.model).name}, {len(data):,} texts of {args.join} waimai review(s) "
        f"({chars:.0f} characters on average), {'from a head run' if args.from_run else 'plain'}"
        f"{trained}; CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)",
        f"words {len(words):,} (segmented in {segmenting:.1f} s); estimate "
        f"{estimate.describe()} = {estimate.seconds:.0f} s (made in {estimating:.1f} s); "
        f"build {total:.0f} s ({estimate.seconds / total:.2f}x)",
        f"time left as the app shows it at {' / '.join(f'{m:.0%}' for m in MARKS)}: "
        f"{' / '.join(errors)} (rate since the build started: {' / '.join(strict)}; "
        f"first progress after {first_at:.1f} s)",
        f"contexts: {json.dumps(matrix.manifest['contexts'])}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(text + "\n")


def _joined(path: Path, n: int, join: int):
    """``n`` labelled texts of ``join`` consecutive reviews each (the first review's label)."""
    reviews = prepare(read_table(path), "review", "label")
    texts, labels = list(reviews.texts), list(reviews.labels)
    rows = [
        (
            "，".join(texts[(join * i + k) % len(texts)] for k in range(join)),
            labels[(join * i) % len(texts)],
        )
        for i in range(n)
    ]
    folder = Path(tempfile.mkdtemp(prefix="embedgen-bench-data-"))
    csv = folder / f"waimai_x{join}.csv"
    pd.DataFrame(rows, columns=["review", "label"]).to_csv(csv, index=False)
    return prepare(read_table(csv), "review", "label")


if __name__ == "__main__":
    main()
