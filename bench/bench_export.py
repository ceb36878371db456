"""Time each export file for a bert-base-chinese-sized matrix (21,128 x 768, float32).

    python bench/bench_export.py

The app's Export page used to build the whole zip when it opened; it now writes each file
when its button is clicked (``embedgen.export.download_bytes``). This prints what each
click costs, and what the page used to cost on opening (the zip), on this machine.
"""

from __future__ import annotations

import platform
import time

import numpy as np

from embedgen.export import DOWNLOADS, download_bytes
from embedgen.matrix import EmbeddingMatrix


def main() -> None:
    rng = np.random.default_rng(0)
    rows, dims = 21_128, 768
    vocab = tuple(chr(0x4E00 + i) for i in range(rows))
    matrix = EmbeddingMatrix(rng.standard_normal((rows, dims), dtype=np.float32), vocab, {})
    print(f"{rows:,} x {dims} float32 on {platform.processor() or platform.machine()}")
    print("| file | seconds | MB |")
    print("| --- | ---: | ---: |")
    for name in DOWNLOADS:
        t0 = time.perf_counter()
        data = download_bytes(matrix, name)
        print(f"| {name} | {time.perf_counter() - t0:.2f} | {len(data) / 1e6:.1f} |")


if __name__ == "__main__":
    main()
