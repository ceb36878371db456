"""One very long unbroken text: what segmenting it costs, whole (jieba alone) and as the
product segments it (embedgen.words.segment, in pieces of SEGMENT_CHARS).

    python bench/bench_long_line.py [--chars 8000 32000 64000] [--whole-up-to 64000]

The text is one unbroken line of random CJK characters (U+4E00-U+9FA5, fixed seed), the
slowest of the kinds tried here for jieba (letters, digits, base64, kana, emoji, repeated or
common characters all run faster). jieba alone is timed up to --whole-up-to characters.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.table import SEGMENT_CHARS  # noqa: E402
from embedgen.words import segment, segmenter  # noqa: E402


def line(chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(chars))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, nargs="+", default=[8000, 32000, 64000, 200000])
    parser.add_argument("--whole-up-to", type=int, default=64000)
    args = parser.parse_args()
    seg = segmenter()
    seg.tokenize("预热")
    segment(seg, line(SEGMENT_CHARS + 1))  # the first pieces pay for compiling and caches
    print(f"pieces of {SEGMENT_CHARS:,} characters")
    print("| characters | jieba, whole text (s) | embedgen.words.segment (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for chars in args.chars:
        text = line(chars)
        started = time.perf_counter()
        segment(seg, text)
        pieces = time.perf_counter() - started
        whole = "not run"
        ratio = ""
        if chars <= args.whole_up_to:
            started = time.perf_counter()
            list(seg.tokenize(text))
            seconds = time.perf_counter() - started
            whole, ratio = f"{seconds:.2f}", f"{seconds / pieces:.0f}x"
        print(f"| {chars:,} | {whole} | {pieces:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
