"""The quality report on real data: every matrix method and option of a model (or run), scored
on the word-similarity and analogy sets in ../shared/data, with the classification texts there
as the corpus that ``aggregated`` reads words in.

    python bench/bench_words.py MODEL_OR_RUN_DIR [--search-words N] [--out bench/results/words.md]

e.g. multilingual-e5-small built by ../shared/tools/build-e5-small.sh. Prints a Markdown table
(Spearman x100 with pairs found / total; 3CosAdd accuracy x100 with coverage) and writes it,
with the machine and the time, to --out. The corpus is waimai_10k's reviews and THUCNews's
10,000 test titles (21,987 texts). --search-words N adds the N most frequent words of jieba's
dictionary to every word matrix, so analogy answers are searched among more than the
benchmarks' own 4,471 words.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.evaluate import read_analogy, read_similarity  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.report import evaluate_all, markdown, options_for  # noqa: E402
from embedgen.runs import is_run_folder, load_run  # noqa: E402
from embedgen.words import Corpus  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus() -> Corpus:
    reviews = DATA / "classification" / "waimai_10k.csv"
    with reviews.open(encoding="utf-8") as f:
        texts = [row["review"] for row in csv.DictReader(f)]
    titles = DATA / "classification" / "THUCNews" / "test.txt"
    texts += [line.split("\t")[0] for line in titles.read_text("utf-8").splitlines()]
    return Corpus.of(texts, "waimai+thucnews")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="model folder or hub id, or a run folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results/words.md"))
    parser.add_argument("--json", type=Path, help="also write the records as JSON here")
    parser.add_argument("--search-words", type=int, default=0, metavar="N")
    parser.add_argument(
        "--words-only", action="store_true", help="score the word-row matrices only"
    )
    args = parser.parse_args()
    # Each matrix's build time reads everything (generated contexts are not kept between them).
    os.environ["EMBEDGEN_FEATURE_CACHE_MB"] = "0"
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: the report needs ../shared/data")
    similarity = [read_similarity(p) for p in sorted((DATA / "wordsim").glob("*.txt"))]
    analogy = [read_analogy(p) for p in sorted((DATA / "analogy").rglob("*.txt"))]
    if is_run_folder(args.source):
        source = load_run(args.source, device="cpu")
    else:
        source = load_encoder(args.source, device="cpu")
    started = time.time()
    chosen = options_for(source, corpus=True)
    if args.words_only:
        chosen = [o for o in chosen if o.words]
    records = evaluate_all(
        source, similarity, analogy, corpus=corpus(), options=chosen, search_words=args.search_words
    )
    table = markdown(records)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    note = (
        f"{args.source} · {machine} · torch {torch.__version__} · "
        f"{args.search_words:,} dictionary words searched besides the benchmarks' · "
        f"{time.time() - started:.0f} s in all\n\n"
    )
    print(note + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(note + table, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
