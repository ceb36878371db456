"""Which corpus contexts the data's word matrix reads: word similarity against characters read.

    python bench/bench_contexts.py --model e5=MODELS/e5-small --model m3e=MODELS/m3e-small

The protocol is in BENCHMARKS.md ("The data's word matrix: which corpus contexts"). Builds
``aggregated`` rows (4 generated contexts, last layer, plain model) of the similarity sets'
words that occur at least twice in a corpus of long texts no earlier choice used (waimai_10k's
reviews and THUCNews' test titles, each joined five at a time in file order, no repeats), for
each variant of corpus contexts; scores wordsim-297 (choose), wordsim-240 and SimLex-999
(confirm) on the pairs of rows, with paired bootstrap intervals against today's default; and
counts the characters each variant reads on bench_data_words' 8,000 texts of 125
characters. Prints a Markdown table and the rule's verdict; about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data_words import _joined  # noqa: E402

from embedgen.data import prepare  # noqa: E402
from embedgen.evaluate import read_similarity, similarity, similarity_difference  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix  # noqa: E402
from embedgen.matrix.aggregated import Generated, chars_per_token, work  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.words import (  # noqa: E402
    Corpus,
    WordOptions,
    corpus_contexts,
    words_from_corpus,
    words_from_list,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("wordsim-297.txt", "wordsim-240.txt", "zh_tw_SimLex-999.txt")  # choose, confirm...
TODAY = "whole text, 8"
ROUND_1 = "32 chars, 2"
VARIANTS = {  # name: (corpus contexts per word, context window, generated contexts per word)
    TODAY: (8, 0, 4),
    "whole text, 2": (2, 0, 4),
    ROUND_1: (2, 32, 4),
    "32 chars, 4": (4, 32, 4),
    "32 chars, 8": (8, 32, 4),
    "64 chars, 2": (2, 64, 4),
    "generated only (reference)": (0, 0, 4),
    "32 chars, 2; 3 generated": (2, 32, 3),  # round 2
    "32 chars, 2; 2 generated": (2, 32, 2),
}
ROUND_2 = ("32 chars, 2; 3 generated", "32 chars, 2; 2 generated")
MARGIN = 1.0  # Spearman x100 a candidate may lose on the choose set


def joined(texts: list[str], n: int = 5) -> list[str]:
    """``texts`` joined ``n`` at a time in order, each text used once."""
    return ["，".join(texts[i : i + n]) for i in range(0, len(texts), n)]


def protocol_corpus() -> Corpus:
    waimai = prepare(read_table(SHARED / "classification" / "waimai_10k.csv"), "review", "label")
    news = prepare(read_table(SHARED / "classification" / "THUCNews" / "test.txt"), 1, 2)
    return Corpus.of(joined(list(waimai.texts)) + joined(list(news.texts)), "protocol")


def read_cost(encoder, corpus: Corpus, words: list[str], variant: tuple[int, int, int]) -> float:
    """The characters a build reads (corpus pieces cut at 128 tokens, generated sentences),
    as the progress bar's shares count them (``aggregated.work``)."""
    per_word, window, generated = variant
    contexts = corpus_contexts(words, corpus, per_word=per_word, window=window)
    per_token = chars_per_token(encoder.tokenizer, [c.text for c in contexts[::50]])
    options = MatrixOptions(
        method="aggregated",
        corpus_contexts=per_word,
        generated_contexts=generated,
        context_tokens=128,
    )
    shares = work(contexts, [Generated(generated, [], list(words))], per_token, options)
    return shares["corpus"] + shares["generated"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="name=folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results/contexts.md"))
    args = parser.parse_args()
    os.environ["EMBEDGEN_HOME"] = tempfile.mkdtemp(prefix="embedgen-contexts-")
    sims = [read_similarity(SHARED / "wordsim" / n) for n in SETS]
    corpus = protocol_corpus()
    counted = set(words_from_corpus(corpus, WordOptions()).words)
    wanted = [w for s in sims for w in s.words if w in counted]
    rows = words_from_list(list(dict.fromkeys(wanted)), name="similarity words in the corpus")
    bench = Corpus.of(_joined(SHARED / "classification" / "waimai_10k.csv", 8000, 5).texts, "b")
    bench_words = words_from_corpus(bench, WordOptions()).words
    lines = [
        f"# bench/bench_contexts.py, {time.strftime('%Y-%m-%d')}, 2 CPU cores",
        "",
        f"Protocol corpus: {len(corpus.texts):,} texts, "
        f"{sum(map(len, corpus.texts)) / len(corpus.texts):.0f} characters on average; "
        f"rows: {len(rows.words):,} similarity words occurring twice or more. "
        f"Bench corpus: 8,000 texts, {len(bench_words):,} words.",
        "",
    ]
    verdict: dict[str, dict[str, bool]] = {}
    for spec in args.model:
        name, folder = spec.split("=", 1)
        encoder = load_encoder(folder, allow_download=False, device="cpu")
        results, took = {}, {}
        for variant, (per_word, window, generated) in VARIANTS.items():
            options = MatrixOptions(
                method="aggregated",
                corpus_contexts=per_word,
                context_chars=window,
                generated_contexts=generated,
                generated_in_corpus=generated,
                device="cpu",
            )
            started = time.perf_counter()
            matrix = build_matrix(encoder, options, words=rows, corpus=corpus)
            took[variant] = time.perf_counter() - started
            results[variant] = [similarity(matrix, s, pool=False) for s in sims]
            print(f"{name} {variant}: {took[variant]:.0f} s", flush=True)
        lines += [
            f"## {name}",
            "",
            "| variant | wordsim-297 (choose) | wordsim-240 | SimLex-999 | characters read "
            "(bench) | build here |",
            "| --- | --- | --- | --- | ---: | ---: |",
        ]
        for variant, scores in results.items():
            cells = []
            ok = True
            for k, (s, r) in enumerate(zip(sims, scores, strict=True)):
                cell = f"{100 * r.spearman:.1f}"
                if variant != TODAY:
                    d = similarity_difference(results[TODAY][k], r, s)
                    cell += f" ({100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}])"
                    ok &= (100 * d.value >= -MARGIN) if k == 0 else (d.high >= 0)
                if variant in ROUND_2 and k == 0:  # also against round 1's choice
                    d = similarity_difference(results[ROUND_1][k], r, s)
                    ok &= 100 * d.value >= -MARGIN
                    cell += f", vs {ROUND_1}: {100 * d.value:+.1f}"
                cells.append(cell)
            cost = read_cost(encoder, bench, bench_words, VARIANTS[variant])
            verdict.setdefault(variant, {})[name] = ok
            lines.append(
                f"| {variant} | {' | '.join(cells)} | {cost:,.0f} | {took[variant]:.0f} s |"
            )
        pairs = ", ".join(
            f"{s.name}: {r.pairs_found}" for s, r in zip(sims, results[TODAY], strict=True)
        )
        lines += ["", f"Pairs scored: {pairs}.", ""]
    candidates = [v for v in VARIANTS if v != TODAY and "reference" not in v]
    passing = [v for v in candidates if all(verdict[v].values())]
    lines.append(f"Candidates that keep similarity on both models: {'; '.join(passing) or 'none'}.")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text, "utf-8")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
