"""The trade-off between label purity and word similarity, on real data: a run tuned on the
waimai_10k reviews, its words read by ``aggregated``, every way of adding the label signal.

    python bench/bench_tradeoff.py RUN_DIR [--out bench/results/tradeoff.md]

RUN_DIR: a run trained on ../shared/data/classification/waimai_10k.csv (text column review,
label column label), e.g. ``embedgen train --model ~/.embedgen/models/e5-small --data
../shared/data/classification/waimai_10k.csv --text-col review --label-col label --max-length 64
--out RUN_DIR``. Similarity: the mean Spearman over wordsim-240 and wordsim-297. Purity: 30
words per label, 10 neighbours (embedgen.evaluate.label_purity).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.data import prepare  # noqa: E402
from embedgen.evaluate import read_similarity  # noqa: E402
from embedgen.report import tradeoff, tradeoff_words  # noqa: E402
from embedgen.runs import load_run  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.tokenstats import association, token_stats  # noqa: E402
from embedgen.words import Corpus, WordSplitter  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder trained on waimai_10k")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tradeoff.md"))
    args = parser.parse_args()
    started = time.time()
    run = load_run(args.run, device="cpu")
    data = prepare(read_table(DATA / "classification" / "waimai_10k.csv"), "review", "label")
    corpus = Corpus.of(data.texts, "waimai_10k")
    stats = token_stats(WordSplitter(corpus), data.texts, data.labels, data.label_names)
    associations = association(stats)
    similarity = [read_similarity(DATA / "wordsim" / f"wordsim-{n}.txt") for n in (240, 297)]
    words = tradeoff_words(associations, similarity)
    records = tradeoff(run, words, associations, similarity=similarity)
    lines = [
        "| option | purity (k=10) | mean Spearman ×100 (wordsim-240, 297) |",
        "| --- | --- | --- |",
    ]
    for r in records:
        lines.append(f"| {r['option']} | {r['purity']:.3f} | {100 * r['similarity']:.1f} |")
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    note = f"{args.run} · {len(words):,} word rows · {machine} · {time.time() - started:.0f} s\n\n"
    text = note + "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
