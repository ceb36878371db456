"""A lever for word similarity, tried and not taken: add the word's characters' vectors.

    python bench/bench_word_chars.py [--model /root/.embedgen/models/e5-small]

Chinese words are made of characters that carry meaning (CWE-style composition). Reads every
word of the three similarity files in ../shared/data/wordsim, and every character of those
words as a word of its own, by ``aggregated`` with the four generated contexts (last layer,
centred, unit rows); then scores the word rows plus ``beta`` times the mean of their
characters' rows (summed, and concatenated) for a few betas. Prints Spearman x100 per file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.evaluate import read_similarity  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.words import words_from_list  # noqa: E402

WORDSIM = Path(__file__).resolve().parents[2] / "shared" / "data" / "wordsim"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    args = parser.parse_args()
    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    sims = {p.stem: read_similarity(p) for p in sorted(WORDSIM.glob("*.txt"))}
    words = sorted({w for s in sims.values() for p in s.pairs for w in (p.first, p.second)})
    chars = sorted({c for w in words for c in w})
    options = MatrixOptions(method="aggregated", corpus_contexts=0)
    started = time.perf_counter()
    word_rows = build_matrix(encoder, options, words=words_from_list(words)).vectors
    char_rows = build_matrix(encoder, options, words=words_from_list(chars)).vectors
    print(f"{len(words)} words, {len(chars)} characters, read in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    at = {w: i for i, w in enumerate(words)}
    char_at = {c: i for i, c in enumerate(chars)}
    w = unit(word_rows - word_rows.mean(0))
    c = unit(char_rows - char_rows.mean(0))
    c_of_w = unit(np.stack([c[[char_at[ch] for ch in word]].mean(0) for word in words]))

    def score(m: np.ndarray) -> str:
        out = []
        for s in sims.values():
            cos = [float(m[at[p.first]] @ m[at[p.second]]) for p in s.pairs]
            out.append(100 * spearmanr(cos, [p.score for p in s.pairs]).statistic)
        return " / ".join(f"{v:.1f}" for v in out)

    print("files:", " / ".join(sims))
    print("words alone:", score(w))
    print("characters alone:", score(c_of_w))
    for beta in (0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
        print(f"words + {beta} characters:", score(unit(w + beta * c_of_w)))
        print(f"words || {beta} characters:", score(unit(np.concatenate([w, beta * c_of_w], 1))))


if __name__ == "__main__":
    main()
